"""``DSSMITrainer``: a ``Seq2SeqTrainer`` that trains Distilling Step-by-Step with the MI loss.

The maths lives in :mod:`hf_cotmi.losses`; this module only wires it into the Trainer: the two forward
passes, loss normalisation over the whole accumulated (and distributed) batch, logging of the loss
components, generation for evaluation, PEFT wrapping and the model card.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
from transformers.trainer_utils import PredictionOutput

from .arguments import DSSMITrainingArguments
from .callbacks import ECECallback, StopOnNonFiniteCallback
from .chunked_losses import chunked_dss_losses
from .collator import EXPL_COLUMNS, PRED_COLUMNS, DSSDataCollator
from .dataset_rows import sized_rows
from .device_reads import read_floats
from .losses import rationale_nll_and_mutual_information
from .metrics import decode_token_ids
from .model_card import (
    DEFAULT_LABEL_MAX_NEW_TOKENS,
    PAPERS,
    TAGS,
    DSSModelCardCallback,
    DSSModelCardData,
    Paper,
    card_base_model,
    render_model_card,
)
from .peft_methods import check_peft_config, check_peft_model, check_target_modules, prompt_learning_method
from .student_types import resolve_student_type

logger = logging.getLogger("hf_cotmi")

COMPONENTS = ("loss_label", "loss_rationale", "loss_mi")


@dataclasses.dataclass(frozen=True)
class DSSBatchCounts:
    """What one optimizer step covers, over all its accumulation micro-batches and all processes.

    :meth:`DSSMITrainer._get_num_items_in_batch` returns it and the Trainer hands it back to
    :meth:`DSSMITrainer.compute_loss` as ``num_items_in_batch``; each loss term divides its local sum by
    its count so the step's loss is a mean over the whole accumulated and distributed batch.

    Attributes:
        label_tokens: label tokens that carry loss (labels other than -100).
        rationale_tokens: rationale tokens that carry loss.
        examples: examples (the MI term is an example mean).
        world_size: processes the counts were summed over.

    Examples:
        >>> import torch
        >>> counts = DSSBatchCounts(torch.tensor(12.0), torch.tensor(40.0), torch.tensor(4.0))
        >>> float(counts.share("label_tokens", torch.tensor(3.0)))  # 3 of 12 tokens here: a quarter
        0.25
    """

    label_tokens: torch.Tensor
    rationale_tokens: torch.Tensor
    examples: torch.Tensor
    world_size: int = 1

    def share(self, name: str, local_sum: torch.Tensor) -> torch.Tensor:
        """``local_sum`` divided by this process's share of the count ``name`` (total / world size).

        Summing the results of all micro-batches and averaging over processes (what DDP does to
        gradients) gives ``sum of everything / total count``.
        """
        total = getattr(self, name).to(torch.float32).clamp_min(1.0)
        return local_sum * self.world_size / total


class _DSSLoss(NamedTuple):
    """What :meth:`DSSMITrainer._dss_loss` computes for one batch.

    Attributes:
        loss: the weighted loss (each term a mean over the batch, or over the step with counts).
        components: the unweighted terms (``loss_label``, ``loss_rationale``, ``loss_mi``), detached 0-d
            tensors on the loss's device: reading them as numbers waits for the device, so they are only read
            when logged (:class:`_ComponentStore`).
        totals: per term, the detached local sum, what it is a mean over (tokens, or examples for MI) and its
            weight in ``loss``: what evaluation adds up over the set.
        outputs: the label logits (``{"logits": ...}``, with ``target_labels`` when kept), empty when chunked.
    """

    loss: torch.Tensor
    components: dict[str, torch.Tensor]
    totals: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    outputs: dict[str, Any]


def _sum_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype sums of losses and counts are kept in on ``device``: float64, as Python adds floats (so the
    sums equal those of the values read one by one), except on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _accumulate(total: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """``total + value`` in :func:`_sum_dtype`, on the device (no host-device synchronisation); always a new
    tensor, so a reference to an earlier total keeps its value.

    Examples:
        >>> _accumulate(_accumulate(None, torch.tensor(0.5)), torch.tensor(2)).item()
        2.5
    """
    value = value.detach()
    if total is None:
        return value.to(_sum_dtype(value.device), copy=True)
    return total + value.to(total.device, total.dtype)


class _ComponentStore:
    """Loss components of one mode (training or evaluation), summed until the next log.

    Training adds each micro-batch's share of its optimizer step (weight 1 for the first micro-batch of
    a step, 0 for the rest), so ``sums / weight`` is the mean over logged steps. Evaluation adds each batch's
    sums, counts (tokens, or examples for MI) and loss weights (:meth:`add_totals`), so ``sums / counts`` is
    the mean over the whole set, whatever its batches.

    The sums and counts stay tensors on the device (:func:`_accumulate`): adding a micro-batch does not wait
    for the device, as reading a number would; :meth:`numbers` reads them all at once, when they are logged.
    Each addition makes new tensors, so a copy of ``sums`` (``dict(store.sums)``) is a snapshot.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weight = 0.0
        self.counts: dict[str, torch.Tensor] = {}
        self.loss_weights: dict[str, float] = {}
        self.foreign_losses: torch.Tensor | None = None

    def add(self, components: Mapping[str, torch.Tensor], weight: float) -> None:
        for name, value in components.items():
            self.sums[name] = _accumulate(self.sums.get(name), value)
        self.weight += weight

    def add_totals(self, totals: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> None:
        for name, (local_sum, count, loss_weight) in totals.items():
            self.sums[name] = _accumulate(self.sums.get(name), local_sum)
            self.counts[name] = _accumulate(self.counts.get(name), count)
            self.loss_weights[name] = loss_weight

    def add_foreign_loss(self, differs: torch.Tensor) -> None:
        """Count an evaluation batch whose loss, as the evaluation loop got it, is not the one the DSS objective
        scored (a :meth:`DSSMITrainer.compute_loss` override's own): ``differs`` is 1 (or True) for such a batch,
        0 for one whose loss is the objective's; a tensor on the device, not read here."""
        self.foreign_losses = _accumulate(self.foreign_losses, differs)

    def numbers(self) -> tuple[dict[str, float], dict[str, float], float]:
        """The sums, the counts and the number of foreign losses (:meth:`add_foreign_loss`) as floats, read in
        one host-device synchronisation."""
        values = read_floats([*self.sums.values(), *self.counts.values(), self.foreign_losses])
        sums, counts = len(self.sums), len(self.counts)
        return (
            dict(zip(self.sums, values[:sums])),
            dict(zip(self.counts, values[sums : sums + counts])),
            values[-1] or 0.0,
        )


def _as_dssmi_arguments(args: Seq2SeqTrainingArguments | None) -> DSSMITrainingArguments:
    if args is None:
        return DSSMITrainingArguments(output_dir="tmp_trainer")
    if isinstance(args, DSSMITrainingArguments):
        return args
    if not isinstance(args, Seq2SeqTrainingArguments):
        raise TypeError(
            f"args must be DSSMITrainingArguments (or Seq2SeqTrainingArguments), got {type(args).__name__}"
        )
    logger.warning(
        "DSSMITrainer got Seq2SeqTrainingArguments; converting them to DSSMITrainingArguments with the "
        "default loss weights and remove_unused_columns=False (the rationale columns must reach the collator)."
    )
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and hasattr(args, f.name)
    }
    values["remove_unused_columns"] = False
    return DSSMITrainingArguments(**values)


def _first_rows(batch: Any, count: int, batch_size: int) -> Any:
    """The first ``count`` examples of a (nested) batch: every tensor or list of ``batch_size`` rows is cut.

    Examples:
        >>> _first_rows({"pred": {"labels": torch.zeros(4, 3)}, "tag": "x"}, 1, 4)["pred"]["labels"].shape
        torch.Size([1, 3])
    """
    if isinstance(batch, Mapping):
        return {key: _first_rows(value, count, batch_size) for key, value in batch.items()}
    if isinstance(batch, torch.Tensor) and batch.dim() > 0 and batch.shape[0] == batch_size:
        return batch[:count]
    if isinstance(batch, list) and len(batch) == batch_size:
        return batch[:count]
    return batch


def _label_columns(labels: torch.Tensor) -> tuple[int, int]:
    """``(first, end)``: the first column where any row has a label and one past the last such column; both
    ``labels.shape[1]`` when there is no label. Read from the device in one synchronisation (the window's
    shape is needed on the host).

    Examples:
        >>> _label_columns(torch.tensor([[-100, -100, 5, -100], [-100, 7, 8, -100]]))
        (1, 3)
    """
    length = labels.shape[1]
    if length == 0:
        return 0, 0
    scored = labels.ne(-100).any(dim=0)
    columns = torch.arange(length, device=labels.device)
    first = torch.where(scored, columns, length).min()
    last = torch.where(scored, columns, -1).max()
    first_column, last_column = torch.stack([first, last]).tolist()
    return first_column, (last_column + 1 if last_column >= 0 else length)


def _prompt_width(labels: torch.Tensor) -> int:
    """The first column where any row has a label: the prompt width of a target-aligned batch."""
    return _label_columns(labels)[0]


def _left_padding(attention_mask: torch.Tensor) -> torch.Tensor:
    """The number of padding positions in front of each row's first token, ``[B]``.

    Examples:
        >>> _left_padding(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])).tolist()
        [2, 0]
    """
    return attention_mask.cumsum(-1).eq(0).sum(-1)


def _roll_left(value: Any, shift: torch.Tensor, length: int) -> Any:
    """``value`` with each row rolled ``shift[row]`` columns to the left, if it is a ``[B, length]`` tensor.

    Examples:
        >>> _roll_left(torch.tensor([[0, 0, 5, 6], [7, 8, 9, 0]]), torch.tensor([2, 0]), 4).tolist()
        [[5, 6, 0, 0], [7, 8, 9, 0]]
    """
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or tuple(value.shape) != (len(shift), length):
        return value
    columns = torch.arange(length, device=value.device)
    return value.gather(1, (columns[None, :] + shift[:, None].to(value.device)) % length)


def _is_deepspeed_zero3() -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def _is_fsdp(model: nn.Module) -> bool:
    from transformers.distributed.fsdp import is_fsdp_managed_module

    return bool(is_fsdp_managed_module(model))


def _has_peft_adapters(model: Any) -> bool:
    """Whether ``model`` carries PEFT adapters (a ``PeftModel``, or a transformers model with adapters loaded
    through its PEFT integration): both have a ``peft_config``, and ``save_pretrained`` then writes the
    adapters only."""
    return hasattr(model, "peft_config")


# What models that change the logits after the output projection carry: config fields (soft-capping,
# scaling; off when None, or 1 for a scale) and model attributes (BART's final_logits_bias, a multiplier).
_LOGIT_TRANSFORM_FIELDS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
_LOGIT_TRANSFORM_ATTRIBUTES = ("final_logits_bias", "lm_head_multiplier", "logit_scale")


def _logit_transform(model: nn.Module, config: Any) -> str | None:
    """Why ``model`` changes the logits after its output projection, or None when it does not (known cases)."""
    configs = [config] + [getattr(config, n, None) for n in ("text_config", "decoder")]
    for one in configs:
        for name in _LOGIT_TRANSFORM_FIELDS:
            value = getattr(one, name, None)
            if (
                value is not None
                and value is not False
                and not (name != "final_logit_softcapping" and value == 1)
            ):
                return f"it transforms the logits after the output projection (config.{name}={value!r})"
    for owner in (model, getattr(model, "model", None)):
        if not isinstance(owner, nn.Module):
            continue
        for name in _LOGIT_TRANSFORM_ATTRIBUTES:
            if name in owner.__dict__ or name in owner._buffers or name in owner._parameters:
                return f"it transforms the logits after the output projection ({type(owner).__name__}.{name})"
    return None


class _PassThrough(torch.autograd.Function):
    """Identity on the hidden states that also takes the head weight as an input (no gradient to it).

    With the head replaced by this, the weight still appears in the forward graph, so DDP with
    ``find_unused_parameters`` counts it as used and waits for the gradient the chunked loss gives it.
    """

    @staticmethod
    def forward(ctx, hidden, weight):  # type: ignore[override]
        return hidden.view_as(hidden)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


@contextlib.contextmanager
def _output_projection_as_identity(head: nn.Module, weight: torch.Tensor) -> Iterator[None]:
    """Make ``head`` return its input, so the model's "logits" are the output projection's inputs.

    Whatever the model does before the head (T5's rescaling, ``logits_to_keep`` slicing) is kept; the head's
    own hooks still run.
    """
    had_own = "forward" in head.__dict__
    original = head.__dict__.get("forward")
    head.forward = lambda hidden: _PassThrough.apply(hidden, weight)
    try:
        yield
    finally:
        if had_own:
            head.forward = original
        else:
            del head.forward


@contextlib.contextmanager
def _head_sees_only(head: nn.Module | None, sequence_length: int, first: int, stop: int) -> Iterator[None]:
    """Slice the output projection's input to the positions ``[first, stop)`` while the block runs.

    For causal models whose ``forward`` takes no ``logits_to_keep``: a forward pre-hook on the head cuts
    the hidden states ``[B, T, d]`` to ``[B, stop - first, d]`` before the projection, so the prompt's
    positions never reach the vocabulary. Only an input of the full sequence length is cut (anything else
    passes untouched), so a head that sees something else is left alone; the caller checks the width of
    the logits it gets back.
    """
    if head is None:
        yield
        return

    def cut(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0] if args else None
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and hidden.shape[1] == sequence_length:
            return (hidden[:, first:stop], *args[1:])
        return None

    handle = head.register_forward_pre_hook(cut)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _neftune_on_tied_embeddings(model: nn.Module, noise_alpha: float | None) -> Iterator[None]:
    """NEFTune noise also on the embedding modules that share the input embeddings' weight, while the block runs.

    The Trainer hooks NEFTune on ``model.get_input_embeddings()`` only. In transformers 5 T5 and BART give
    their encoder and decoder embedding modules of their own, tied to that one by weight, and never call it:
    without these hooks ``neftune_noise_alpha`` trains a seq2seq student without any noise. Each module is
    called once per pass, so no embedding gets noise twice.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if noise_alpha is None or embeddings is None:
        yield
        return
    from transformers.integrations.neftune import neftune_post_forward_hook

    tied = [
        module
        for module in model.modules()
        if isinstance(module, nn.Embedding)
        and module is not embeddings
        and module.weight is embeddings.weight
    ]
    handles = []
    for module in tied:
        module.neftune_noise_alpha = noise_alpha
        handles.append(module.register_forward_hook(neftune_post_forward_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in tied:
            del module.neftune_noise_alpha


@contextlib.contextmanager
def _generation_config_kept(model: nn.Module) -> Iterator[None]:
    """Put the model's generation config back after the block.

    ``Seq2SeqTrainer.prediction_step`` writes generate's defaults (``max_length=20``, ``top_k=50``, ...) into
    ``model.generation_config`` after each generation. Saved with the model, they pinned ``max_length`` and
    made every later ``generate(max_new_tokens=...)`` of the trained student warn that both limits were set.
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        yield
        return
    kept = copy.deepcopy(vars(config))
    try:
        yield
    finally:
        # in place: whoever holds the config object (a PEFT wrapper, the user) sees it restored
        vars(config).clear()
        vars(config).update(kept)


class _LossOnlyModel:
    """Stands in for the model where ``Seq2SeqTrainer.prediction_step`` computes a flat batch's loss with
    ``model(**inputs)`` after generating (generation itself uses ``trainer.model``): ``{"loss": loss_of(inputs)}``.

    Examples:
        >>> _LossOnlyModel(lambda batch: batch["labels"].float().mean())(labels=torch.tensor([1, 3]))
        {'loss': tensor(2.)}
    """

    def __init__(self, loss_of: Callable[[dict[str, Any]], torch.Tensor]) -> None:
        self.loss_of = loss_of

    def __call__(self, **inputs: Any) -> dict[str, torch.Tensor]:
        return {"loss": self.loss_of(inputs)}


class DSSMITrainer(Seq2SeqTrainer):
    """Drop-in ``Seq2SeqTrainer`` for Distilling Step-by-Step plus the mutual-information loss.

    Each training batch from :class:`~hf_cotmi.DSSDataCollator` is ``{"pred": ..., "expl": ...}``. The
    trainer runs the ``predict:`` pass and the ``explain:`` pass and minimises
    ``label_loss_weight * label_loss + rationale_loss_weight * rationale_loss + mi_loss_weight * mi_loss``
    (see :class:`~hf_cotmi.DSSMITrainingArguments`). A flat batch (plain ``input_ids``/``labels``, e.g. from
    ``DataCollatorForSeq2Seq``) trains as ordinary seq2seq: its loss (logged as ``loss`` and ``loss_label``)
    is the label-token mean over the whole optimizer step, as plain ``Seq2SeqTrainer`` gives for models that
    take ``num_items_in_batch``.

    - Both cross-entropies are token means over the whole optimizer step (all gradient-accumulation
      micro-batches and all processes), and the MI term is an example mean over it, so (batch 8,
      accumulation 1) and (batch 2, accumulation 4) give the same loss and gradients.
    - ``loss_label``, ``loss_rationale`` and ``loss_mi`` are logged beside ``loss`` in training and
      ``eval_loss_*`` in evaluation. The evaluation loss is the same weighted objective as in training,
      MI term included (the released code left it out of the evaluation loss); features without
      rationales give the label term only. Its terms are means over the whole evaluation set, as the
      training terms are over an optimizer step (token means, and an example mean for MI, over all batches
      and processes), and ``eval_loss`` is their weighted sum: none depends on ``per_device_eval_batch_size``
      or the number of processes (except ``mi_variant="paper"``'s MI term, below). Nested DSS batches are
      scored by the DSS objective itself, not through :meth:`compute_loss`, so a subclass that overrides it
      changes nothing there; a flat batch is scored through it. Where such an override returns a loss of its
      own for a flat batch (not the one ``super().compute_loss`` gave it: an added term, a loss computed
      without it), ``eval_loss`` is transformers' (the mean of the batch losses the evaluation loop got, which
      depends on the batch size); an override that passes the DSS loss on keeps the set mean. The
      ``eval_loss_*`` components are reported as above.
    - ``mi_variant="paper"`` reduces over padded positions too, so its value depends on how far a batch
      is padded; ``"masked"`` does not.
    - With ``predict_with_generate`` evaluation generates labels from the ``predict:`` input; with
      ``output_rationale=True`` it also generates rationales, and :meth:`predict` returns
      ``predictions=(label_ids, rationale_ids)`` and writes ``predictions.jsonl`` (``{"prediction",
      "rationale"}`` per example, and ``"input"`` when the dataset has that column).
    - ``peft_config`` wraps the model with PEFT; only the adapter trains and is saved. Its ``task_type``
      must be the student's (``SEQ_2_SEQ_LM`` or ``CAUSAL_LM``); AdaLoRA and CPT, whose training needs
      more than a forward pass, are refused (:func:`hf_cotmi.peft_methods.check_peft_config`).
    - Trainer options keep their meaning: ``neftune_noise_alpha`` noises the embeddings of both passes (a
      seq2seq student's encoder and decoder embeddings), ``remove_unused_columns=True`` keeps the rationale
      columns, ``average_tokens_across_devices=False`` averages each process's loss over its own batch only.
    - Decoder-only students (``AutoModelForCausalLM``; :attr:`student_type` is ``"causal"``) train through
      the same code: features with one sequence per task and the loss on target + EOS only
      (``prepare_dss_features(..., model=model)``), target-aligned batches from
      :class:`~hf_cotmi.DSSDataCollator`, the output projection computed only at positions that predict
      targets (``logits_to_keep``), generation from the left-padded prompts returning only the new tokens.
      See ``docs/guides/causal.md``.
    - ``chunked_output_projection=True`` computes the three terms from the output projection's inputs in
      position chunks (:func:`~hf_cotmi.chunked_dss_losses`), recomputing the logits in backward, so no
      ``[B, n, V]`` logits are held; same loss and gradients, one more output-projection product per pass.
      Heads it cannot take apart fall back with a warning (see ``docs/concepts/mi-loss.md``). A flat batch's
      loss is chunked too. ``predict_with_generate=False`` evaluation that keeps predictions (``predict()``)
      returns the label task's logits, as ``Seq2SeqTrainer`` does, so those batches are not chunked.

    Callbacks that define ``evaluation_metrics(trainer, eval_dataset, metric_key_prefix) -> dict`` (such as
    :class:`~hf_cotmi.ECECallback`) get their metrics merged into each evaluation's logged metrics.

    Examples:
        >>> from transformers import Seq2SeqTrainer  # before
        >>> from hf_cotmi import DSSMITrainer, DSSMITrainingArguments  # after
        >>> # trainer = DSSMITrainer(model=model, args=DSSMITrainingArguments("out"), processing_class=tok,
        >>> #                        train_dataset=features["train"], eval_dataset=features["valid"])
    """

    _tag_names: list[str] = TAGS
    """Tags of every model this trainer trains (model card metadata and ``model.add_model_tags``)."""
    _papers: tuple[Paper, ...] = PAPERS
    """The papers the model card cites: Distilling Step-by-Step and the mutual-information loss."""
    _label_logits_are_predictions: bool = False
    """True while a flat batch's evaluation step returns its label logits as the predictions (see
    :meth:`_flat_prediction_step`): :meth:`compute_loss` then computes them, chunking or not."""
    _evaluating_flat_batch: bool = False
    """True during a flat batch's evaluation step (:meth:`_flat_prediction_step`): :meth:`compute_loss` then adds
    the batch's loss sums and counts to the evaluation's, and keeps its loss in :attr:`_flat_batch_loss`."""
    _flat_batch_loss: torch.Tensor | None = None
    """The loss :meth:`compute_loss` computed for the flat evaluation batch in progress; None before it has (and
    when a ``compute_loss`` override never calls it)."""
    _flat_batch_target_labels: torch.Tensor | None = None
    """The labels the label logits of the flat evaluation batch in progress are scored against (a decoder-only
    student's: its target window), when :meth:`compute_loss` kept those logits as the predictions; None
    otherwise. :meth:`_flat_prediction_step` returns them as the label ids, aligned with the logits."""

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Seq2SeqTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Any = None,
        compute_metrics: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        preprocess_logits_for_metrics: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        args = _as_dssmi_arguments(args)
        if compute_metrics is not None and not args.predict_with_generate:
            raise ValueError(
                "compute_metrics needs predict_with_generate=True: DSSMITrainer's metrics compare generated "
                "labels; with predict_with_generate=False evaluation computes the losses, and predict() returns the "
                "label logits"
            )
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "compute_loss_func is not used by DSSMITrainer: its loss is label_loss_weight * label loss + "
                "rationale_loss_weight * rationale loss + mi_loss_weight * MI loss (set those instead)"
            )
        if model is not None:
            check_peft_model(model, resolve_student_type(model))
        if peft_config is not None:
            if model is None:
                raise ValueError("peft_config needs a model to wrap; model is None")
            check_peft_config(peft_config, resolve_student_type(model))
            if _has_peft_adapters(model):
                raise ValueError(
                    "peft_config was given for a model that already has PEFT adapters (it has a "
                    "peft_config); wrapping it again would nest a second adapter model around it. Pass the "
                    "model without peft_config to train its adapters, or the base model with peft_config"
                )
            check_target_modules(peft_config, model)
            try:
                from peft import get_peft_model
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "peft_config needs the `peft` package: pip install 'hf-cotmi[peft]'"
                ) from error
            model = get_peft_model(model, peft_config)
        default_collator = (
            data_collator is None and processing_class is not None and hasattr(processing_class, "pad")
        )
        if default_collator and model is not None:
            data_collator = DSSDataCollator(processing_class, model=model)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            **kwargs,
        )
        self.args: DSSMITrainingArguments
        if default_collator and model is None:  # model_init: the model (and so its layout) exists only now
            self.data_collator = DSSDataCollator(processing_class, model=self.model)
        if self.args.stop_on_non_finite:  # finite or stop (see StopOnNonFiniteCallback)
            self.add_callback(StopOnNonFiniteCallback(self))
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        self.model_card_callback = DSSModelCardCallback(self._initial_model_card_data())
        self.add_callback(self.model_card_callback)
        self._prepare_causal_generation()
        # One store of loss components per mode, read and reset by log().
        self._components: dict[str, _ComponentStore] = {"train": _ComponentStore(), "eval": _ComponentStore()}
        self._last_component_step: int | None = None
        # the evaluate()/predict() call in progress: its dataset, metric prefix and generation options
        self._evaluation_context: tuple[Any, str, dict[str, Any]] | None = None
        # evaluation sets read into memory for several processes, by id() of the set: (the set, its rows)
        self._sized_eval_sets: dict[int, tuple[Any, Any]] = {}

    @property
    def evaluation_generation_kwargs(self) -> dict[str, Any]:
        """The generation options (``max_new_tokens``, ``num_beams``, ...) the caller passed to the
        :meth:`evaluate` or :meth:`predict` call in progress, up to the logging of its metrics (what the
        callbacks' evaluation hooks see); empty outside one and when none were passed.

        :class:`hf_cotmi.ECECallback` reads them, so the confidences behind the ECE come from the same
        generation as the accuracy.

        Examples:
            >>> # trainer.evaluate(max_new_tokens=8)  # the callback sees {"max_new_tokens": 8} meanwhile
            >>> # trainer.evaluation_generation_kwargs  # {} again afterwards
        """
        return dict(self._evaluation_context[2]) if self._evaluation_context is not None else {}

    # ------------------------------------------------------------------ loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        """Count label tokens, rationale tokens and examples over all micro-batches of one optimizer step.

        Returns a :class:`DSSBatchCounts` summed over processes (over this process only with
        ``average_tokens_across_devices=False``), or defers to the Trainer for batches that are not mappings.
        A flat batch (``DataCollatorForSeq2Seq``'s ``BatchEncoding`` as well as a plain dict) counts as the
        label task, so its loss is the token mean over the whole step, as plain ``Seq2SeqTrainer`` makes it
        for models that take ``num_items_in_batch``.
        """
        if not batch_samples or not isinstance(batch_samples[0], Mapping):
            return super()._get_num_items_in_batch(batch_samples, device)
        # summed where the batches are (on the device, without waiting for it), then moved once
        label_tokens: torch.Tensor | None = None
        rationale_tokens: torch.Tensor | None = None
        examples = 0
        for batch in batch_samples:
            pred = batch["pred"] if "pred" in batch else batch
            if "labels" not in pred:
                return None
            label_tokens = _accumulate(label_tokens, self._scored_tokens(pred["labels"]))
            examples += pred["labels"].shape[0]
            if "expl" in batch:
                rationale_tokens = _accumulate(rationale_tokens, self._scored_tokens(batch["expl"]["labels"]))
        assert label_tokens is not None  # batch_samples is not empty
        if rationale_tokens is None:
            rationale_tokens = torch.zeros_like(label_tokens)
        counts = torch.stack([label_tokens, rationale_tokens, torch.full_like(label_tokens, examples)])
        counts = counts.to(device, _sum_dtype(device))
        # average_tokens_across_devices=False: each process normalises by its own counts (DDP then averages
        # the per-process means), as the Trainer does
        world = max(1, self.accelerator.num_processes) if self.args.average_tokens_across_devices else 1
        if world > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return DSSBatchCounts(counts[0], counts[1], counts[2], world_size=world)

    def _scored_tokens(self, labels: torch.Tensor) -> torch.Tensor:
        """The targets of ``labels`` that carry loss: those other than -100, and for a decoder-only student not
        the first column (no position predicts it; :meth:`_causal_forward` drops it, as the model's own
        shifted loss and the Trainer's count do)."""
        if self.student_type == "causal":
            labels = labels[:, 1:]
        return labels.ne(-100).sum()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Weighted sum of the label loss, the rationale loss and the MI loss (see the class docstring)."""
        counts = num_items_in_batch if isinstance(num_items_in_batch, DSSBatchCounts) else None
        keep_logits = return_outputs and self._label_logits_are_predictions
        result = self._dss_loss(model, inputs, counts, keep_logits)
        loss, outputs = result.loss, result.outputs
        if keep_logits:
            # a flat evaluation batch's (see _label_logits_are_predictions): the base prediction_step takes every
            # output but the loss as the predictions, so the labels go to _flat_prediction_step apart
            outputs = dict(outputs)
            self._flat_batch_target_labels = outputs.pop("target_labels")
        # With counts the loss is normalised over the whole accumulated batch: the Trainer must not divide
        # it again (a flat batch gets them too, see _get_num_items_in_batch). Without them (compute_loss called
        # directly) the loss is a local mean, which the Trainer would divide by the accumulation steps.
        self.loss_is_scaled_for_ga = counts is not None
        if model.training:
            # global_step is constant over the micro-batches of one optimizer step
            first_of_step = self.state.global_step != self._last_component_step
            self._last_component_step = self.state.global_step
            self._components["train"].add(result.components, weight=1.0 if first_of_step else 0.0)
        elif self._evaluating_flat_batch:
            self._flat_batch_loss = loss  # what the evaluation loop gets unless an override changes it
            self._add_evaluation_totals(model, inputs, result.totals)
        return (loss, outputs) if return_outputs else loss

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, with the training loss components of an earlier ``train()`` call forgotten (a
        second call's first step has the step number the first call's last step had).

        ``resume_from_checkpoint=True`` resumes from the newest *complete* ``checkpoint-N/`` in
        ``output_dir`` (:func:`~hf_cotmi.latest_complete_checkpoint`), skipping with a warning the
        half-written ones a process killed while saving leaves (transformers would take the highest number
        and fail on it, or resume from it with a fresh optimizer); an error when there is none. A path (or
        ``"latest"``) is resolved as :func:`~hf_cotmi.resolve_resume_checkpoint` does: an incomplete checkpoint,
        such as one written with ``save_only_model=True`` (no optimizer or scheduler state), is refused
        rather than resumed with a fresh optimizer. The loss weights are checked again first
        (:meth:`~hf_cotmi.DSSMITrainingArguments.check_loss_weights`): one changed after the arguments were
        built is refused before any step.

        Examples:
            >>> # trainer.train(resume_from_checkpoint=True)  # the newest complete checkpoint in output_dir
        """
        self.args.check_loss_weights()
        if self.args.eval_strategy != "no":  # a generation length its evaluations cannot use fails now
            self._check_generation_room(predictions=self._evaluation_generates_during_training())
        if resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            from .checkpoints import resolve_resume_checkpoint

            resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        self._last_component_step = None
        self._components["train"] = _ComponentStore()
        self._stopped_when_saved = False
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _inner_training_loop(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's loop, with ``neftune_noise_alpha`` reaching every embedding module the student calls
        (see :func:`_neftune_on_tied_embeddings`); the model exists here even when ``model_init`` builds it."""
        with _neftune_on_tied_embeddings(self._base_model(self.model), self.neftune_noise_alpha):
            return super()._inner_training_loop(*args, **kwargs)

    def _load_callback_state(self) -> None:
        """The Trainer's restoring of callback states on resume (``restore_callback_states_from_checkpoint``),
        remembering whether the restored ``TrainerControl`` had stopped training before the checkpoint's
        own budget (early stopping, a callback): the Trainer clears that flag when training begins. A stop at
        the budget is not one: a larger ``max_steps`` continues such a run. (``self.state`` is still the
        checkpoint's here, with its ``max_steps``.)"""
        super()._load_callback_state()
        restored = self.args.restore_callback_states_from_checkpoint
        stopped_early = self.control.should_training_stop and self.state.global_step < self.state.max_steps
        self._stopped_when_saved = bool(restored and stopped_early)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's epoch, not run when the resumed run had finished.

        transformers takes one more optimizer step from a checkpoint saved at ``max_steps`` inside an epoch
        (its step loop checks the budget only after a step), and trains on from a checkpoint saved when
        training stopped (early stopping, a callback) even with its callback states restored.
        """
        reason = None
        if 0 < self.state.max_steps <= self.state.global_step:
            reason = (
                f"already reached max_steps={self.state.max_steps} (global step {self.state.global_step})"
            )
        elif self._stopped_when_saved:
            reason = f"was saved when training stopped (global step {self.state.global_step})"
        if reason is not None:
            logger.warning("the checkpoint resumed from %s: nothing left to train", reason)
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _base_model(self, model: nn.Module) -> nn.Module:
        """``model`` without its accelerate (DDP, FSDP, ...) and PEFT wrappers: the transformers model."""
        inner = self.accelerator.unwrap_model(model)
        return inner.get_base_model() if hasattr(inner, "get_base_model") else inner

    def _set_signature_columns_if_needed(self) -> None:
        """The columns ``remove_unused_columns=True`` keeps: those ``model.forward`` takes, as in the Trainer,
        and the rationale task's (``expl_input_ids``, ``expl_attention_mask``, ``rationale_labels``), which the
        collator needs and ``forward`` does not name. Other columns (texts, ids) are still removed."""
        super()._set_signature_columns_if_needed()
        for column in (*PRED_COLUMNS, *EXPL_COLUMNS):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def training_loss_components(self) -> dict[str, float]:
        """The training loss components summed since the last log (``loss_label``, ``loss_rationale``, ...).

        The sums are kept on the device while training; reading them waits for it (one synchronisation). Each
        optimizer step adds its own values, so the difference of two readings taken around a step is
        that step's components (how :class:`~hf_cotmi.StopOnNonFiniteCallback` names what went non-finite).

        Examples:
            >>> # before = trainer.training_loss_components(); ...one step...; after - before
        """
        return self._components["train"].numbers()[0]

    def _training_loss_sums(self) -> dict[str, torch.Tensor]:
        """:meth:`training_loss_components` as tensors on the device, without waiting for it: a snapshot (the
        store adds new tensors), which :class:`~hf_cotmi.StopOnNonFiniteCallback` takes at every step."""
        return dict(self._components["train"].sums)

    def _decoder_input_ids(self, labels: torch.Tensor) -> torch.Tensor:
        model = self._base_model(self.model)
        if not hasattr(model, "prepare_decoder_input_ids_from_labels"):
            raise ValueError(
                f"{type(model).__name__} cannot build decoder_input_ids from labels; give DSSDataCollator the "
                "model (DSSDataCollator(tokenizer, model=model)) or add decoder_input_ids to the batch"
            )
        return model.prepare_decoder_input_ids_from_labels(labels=labels)

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the positions that predict targets, ``[B, m, V]``, and those targets ``[B, m]``."""
        if self.student_type == "causal":
            return self._causal_forward(model, batch)
        labels = batch["labels"]
        model_inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "decoder_input_ids" not in model_inputs:
            model_inputs["decoder_input_ids"] = self._decoder_input_ids(labels)
        outputs = model(**model_inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return logits, labels

    @property
    def student_type(self) -> str:
        """``"seq2seq"`` or ``"causal"``, from the model's ``config.is_encoder_decoder``.

        Examples:
            >>> # DSSMITrainer(model=AutoModelForCausalLM.from_pretrained(...), ...).student_type  -> 'causal'
        """
        return resolve_student_type(self.model)

    def _supports_logits_to_keep(self, model: nn.Module) -> bool:
        inner = self._base_model(model)
        cached = getattr(self, "_logits_to_keep_support", None)
        if cached is None or cached[0] is not type(inner):
            supported = "logits_to_keep" in inspect.signature(inner.forward).parameters
            if not supported:
                logger.warning(
                    "%s.forward takes no logits_to_keep: the hidden states are cut to the target positions "
                    "before its output projection instead (a hook on get_output_embeddings())",
                    type(inner).__name__,
                )
            cached = (type(inner), supported)
            self._logits_to_keep_support = cached
        return cached[1]

    def _causal_forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder-only forward that projects only the positions predicting target tokens.

        The target window is the columns ``[start, end)`` between the first and last label other than -100
        over the batch (with :class:`~hf_cotmi.DSSDataCollator` every row's target starts at ``start``).
        Position ``t`` predicts token ``t + 1``, so the logits kept are those of positions
        ``start - 1 .. end - 2``: ``logits_to_keep`` (a 1-D tensor of those positions) drops the prompt and
        the positions after the window before the output projection where the model supports it; otherwise a
        pre-hook on the output projection cuts its input to those positions (:func:`_head_sees_only`).
        """
        labels = batch["labels"]
        first, end = _label_columns(labels)
        # A label at column 0 has no position predicting it (as in the model's own shifted loss).
        start = max(1, first)
        end = max(end, start + 1)
        width = end - start
        model_inputs = {k: v for k, v in batch.items() if k != "labels"}
        model_inputs["use_cache"] = False
        if prompt_learning_method(self.accelerator.unwrap_model(model)) and "attention_mask" in model_inputs:
            logits = self._right_padded_forward(model, model_inputs, start, width)
        elif self._supports_logits_to_keep(model):
            keep = torch.arange(start - 1, end - 1, device=labels.device) - labels.shape[1]  # from the end
            outputs = model(**model_inputs, logits_to_keep=keep)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        else:
            sequence_length = labels.shape[1]
            with _head_sees_only(self._output_projection_module(model), sequence_length, start - 1, end - 1):
                outputs = model(**model_inputs)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            if logits.shape[1] == sequence_length:  # the head saw something else: nothing was cut
                logits = logits[:, start - 1 : end - 1]
            elif logits.shape[1] != width:
                raise RuntimeError(
                    f"{type(model).__name__} returned logits for {logits.shape[1]} positions; expected "
                    f"{sequence_length} (every position) or {width} (the target positions)"
                )
        target = labels[:, start:end]
        if target.shape[1] < width:  # a batch without any label: one empty position
            pad = labels.new_full((labels.shape[0], width - target.shape[1]), -100)
            target = torch.cat([target, pad], dim=1)
        return logits, target

    def _right_padded_forward(
        self, model: nn.Module, model_inputs: dict[str, Any], start: int, width: int
    ) -> torch.Tensor:
        """The target window's logits ``[B, width, V]`` of a student with prompt-learning adapters, computed on
        right-padded rows.

        peft puts its virtual tokens in front of the left padding and, for prompt tuning and p-tuning, drops
        ``position_ids``: a left-padded row would see its positions (and its distance to the virtual tokens)
        shifted by its padding. Each row is rolled so that its tokens start at column 0 (the padding goes to
        the end, where a causal model never looks back at it), and each row's logits at the positions
        predicting its targets are gathered back into the batch's window ``start - 1 .. start + width - 2``.
        """
        mask = model_inputs["attention_mask"]
        length = mask.shape[1]
        shift = _left_padding(mask)
        rolled = {key: _roll_left(value, shift, length) for key, value in model_inputs.items()}
        if "position_ids" in rolled:
            rolled["position_ids"] = (rolled["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        first = start - 1 - shift  # each row's first window column once rolled
        kept = length - int(first.min())
        extra = {"logits_to_keep": kept} if self._supports_logits_to_keep(model) else {}
        outputs = model(**rolled, **extra)
        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0])[:, -kept:]
        index = (first - (length - kept))[:, None] + torch.arange(width, device=first.device)[None, :]
        return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))

    def _dss_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        counts: DSSBatchCounts | None,
        keep_logits: bool = False,
    ) -> _DSSLoss:
        """The weighted loss, its components, their sums and counts, and the label logits (none when chunked);
        ``counts=None`` means local means. A nested or a flat batch is chunked where the head allows it, unless
        ``keep_logits`` asks for the label logits (the unchunked path). A flat batch's loss is its label term,
        unweighted."""
        args = self.args
        pred = inputs["pred"] if "pred" in inputs else inputs
        expl = inputs.get("expl") if "pred" in inputs else None
        if "labels" not in pred:
            raise ValueError("the batch has no 'labels': the label task needs targets to compute a loss")

        def mean(name: str, local_sum: torch.Tensor, local_count: torch.Tensor) -> torch.Tensor:
            if counts is not None:
                return counts.share(name, local_sum)
            return local_sum / local_count.to(torch.float32).clamp_min(1.0)

        flat = "pred" not in inputs
        needs_rationale = args.needs_rationale_pass and not flat
        if needs_rationale and expl is None:
            if model.training:
                raise ValueError(
                    "rationale_loss_weight or mi_loss_weight is > 0 but the batch has no rationale part "
                    "('expl'); give the training features expl_input_ids, expl_attention_mask and "
                    "rationale_labels (hf_cotmi.prepare_dss_features does)"
                )
            needs_rationale = False
        with_mi = needs_rationale and args.mi_loss_weight > 0
        head_weight = None if keep_logits else self._chunkable_output_projection(model)
        if head_weight is not None:
            label_sum, rationale_sum, mi_mean, labels, rationale_labels = self._chunked_sums(
                model, pred, expl if needs_rationale else None, head_weight, with_mi
            )
            outputs: dict[str, Any] = {}
        else:
            label_sum, rationale_sum, mi_mean, labels, rationale_labels, label_logits = self._unchunked_sums(
                model, pred, expl if needs_rationale else None, with_mi
            )
            outputs = {"logits": label_logits}
        label_tokens = labels.ne(-100).sum()
        label_loss = mean("label_tokens", label_sum, label_tokens)
        label_weight = 1.0 if flat else args.label_loss_weight
        totals = {"loss_label": (label_sum.detach(), label_tokens, label_weight)}
        if keep_logits:  # the labels the logits are scored against (a causal student's: its target window)
            outputs["target_labels"] = labels
        if flat:
            return _DSSLoss(label_loss, {"loss_label": label_loss.detach()}, totals, outputs)

        loss = label_weight * label_loss
        components = {"loss_label": label_loss.detach()}
        if needs_rationale:
            rationale_tokens = rationale_labels.ne(-100).sum()
            rationale_loss = mean("rationale_tokens", rationale_sum, rationale_tokens)
            loss = loss + args.rationale_loss_weight * rationale_loss
            components["loss_rationale"] = rationale_loss.detach()
            totals["loss_rationale"] = (rationale_sum.detach(), rationale_tokens, args.rationale_loss_weight)
            if with_mi:
                # filled on the device: torch.tensor(n, device=...) copies from the host and waits for it
                local_examples = labels.new_full((), labels.shape[0], dtype=torch.float32)
                mi_sum = mi_mean * local_examples
                mi_loss = mean("examples", mi_sum, local_examples)
                loss = loss + args.mi_loss_weight * mi_loss
                components["loss_mi"] = mi_loss.detach()
                totals["loss_mi"] = (mi_sum.detach(), local_examples, args.mi_loss_weight)
        return _DSSLoss(loss, components, totals, outputs)

    def _unchunked_sums(
        self, model: nn.Module, pred: dict[str, Any], expl: dict[str, Any] | None, with_mi: bool
    ) -> tuple[Any, ...]:
        """Summed label NLL, summed rationale NLL, MI mean (None where left out), both targets and the label
        logits, from the full logits of the target-predicting positions."""
        args = self.args
        label_logits, labels = self._forward(model, pred)
        vocab = label_logits.shape[-1]
        label_sum = F.cross_entropy(
            label_logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        if expl is None:
            return label_sum, None, None, labels, None, label_logits
        rationale_logits, rationale_labels = self._forward(model, expl)
        # One log-softmax serves both the rationale cross-entropy and the MI term.
        rationale_log_probs = torch.log_softmax(rationale_logits, dim=-1, dtype=torch.float32)
        del rationale_logits
        mi_mean = None
        if with_mi:
            rationale_sum, mi_mean = rationale_nll_and_mutual_information(
                rationale_log_probs,
                rationale_labels,
                label_logits.detach(),
                label_mask=labels.ne(-100),
                reduction=args.mi_reduction,
                divergence=args.mi_divergence,
                variant=args.mi_variant,
            )
        else:
            rationale_sum = F.nll_loss(
                rationale_log_probs.reshape(-1, vocab),
                rationale_labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
        return label_sum, rationale_sum, mi_mean, labels, rationale_labels, label_logits

    def _chunked_sums(
        self,
        model: nn.Module,
        pred: dict[str, Any],
        expl: dict[str, Any] | None,
        head_weight: torch.Tensor,
        with_mi: bool,
    ) -> tuple[Any, ...]:
        """The sums of :meth:`_unchunked_sums` from the output projection's inputs, in position chunks."""
        args = self.args
        head = self._output_projection_module(model)
        with _output_projection_as_identity(head, head_weight):
            label_hidden, labels = self._forward(model, pred)
            rationale_hidden, rationale_labels = (
                self._forward(model, expl) if expl is not None else (None, None)
            )
        label_sum, rationale_sum, mi_mean = chunked_dss_losses(
            head_weight,
            label_hidden,
            labels,
            rationale_hidden,
            rationale_labels,
            mutual_information=with_mi,
            reduction=args.mi_reduction,
            divergence=args.mi_divergence,
            variant=args.mi_variant,
            chunk_size=args.output_projection_chunk_size,
        )
        return label_sum, rationale_sum, mi_mean, labels, rationale_labels

    def _output_projection_module(self, model: nn.Module) -> nn.Module | None:
        inner = self._base_model(model)
        getter = getattr(inner, "get_output_embeddings", None)
        return getter() if callable(getter) else None

    def _chunkable_output_projection(self, model: nn.Module) -> torch.Tensor | None:
        """The head weight when ``chunked_output_projection`` is on and the head allows it, else None.

        The chunked path replaces the head by its weight: it needs a plain ``nn.Linear`` without bias, and a
        model that does nothing to the logits after the head. Anything else falls back to the unchunked
        path, with one warning per model class.
        """
        if not self.args.chunked_output_projection:
            return None
        head = self._output_projection_module(model)
        inner = self._base_model(model)
        config = getattr(inner, "config", None)
        reason = None
        if head is None:
            reason = "it has no output embeddings (get_output_embeddings() is None)"
        elif type(head) is not nn.Linear:
            reason = (
                f"its output projection is a {type(head).__name__}, not a plain nn.Linear (for example LoRA "
                "or modules_to_save on the head)"
            )
        elif head.bias is not None:
            reason = "its output projection has a bias"
        elif _is_fsdp(model) or _is_deepspeed_zero3():
            reason = (
                "FSDP or DeepSpeed ZeRO-3 shards the output projection weight outside the model's forward"
            )
        else:
            reason = _logit_transform(inner, config)
        if reason is None:
            return head.weight
        cached = getattr(self, "_chunked_fallback_warned", None)
        if cached is not type(inner):
            logger.warning(
                "chunked_output_projection is on but %s cannot use it: %s; computing the full logits instead "
                "(same loss, more memory)",
                type(inner).__name__,
                reason,
            )
            self._chunked_fallback_warned = type(inner)
        return None

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        """``include_num_input_tokens_seen``: count the tokens of both passes' inputs (the batch is nested,
        ``{"pred": ..., "expl": ...}``, where the Trainer looks for a top-level ``input_ids``)."""
        parts = [inputs[key] for key in ("pred", "expl") if isinstance(inputs.get(key), dict)]
        if not parts:
            super()._track_num_input_tokens(inputs)
            return
        for part in parts:
            super()._track_num_input_tokens(part)

    # --------------------------------------------------------------- logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged loss components of the current mode to the logs, then log as usual.

        The mode is explicit: evaluation while :meth:`evaluate`/:meth:`predict` run (they set the
        evaluation context), training otherwise. Training components reach the log that carries ``loss``;
        the end-of-training summary (no ``loss`` key) leaves them for the next one.
        """
        if self._evaluation_context is not None:  # the loss components are in logs already (evaluation_loop)
            dataset, prefix, _ = self._evaluation_context
            for callback in self.callback_handler.callbacks:
                hook = getattr(callback, "evaluation_metrics", None)
                if callable(hook):
                    logs.update(hook(self, dataset, prefix) or {})
            self._components["eval"] = _ComponentStore()
            self._evaluation_context = None
        elif "loss" in logs:
            store = self._components["train"]
            if store.weight > 0 and store.sums:
                sums = store.numbers()[0]  # the one read of the components since the last log
                means = {k: sums[k] / store.weight for k in COMPONENTS if k in sums}
                logs.update({k: round(v, 6) for k, v in self._gather_mean(means).items()})
            self._components["train"] = _ComponentStore()
        super().log(logs, start_time)

    def _evaluation_components(self, prefix: str) -> dict[str, float]:
        """The evaluation loss and its components over the whole set (all batches, all processes), as the
        training loss is over an optimizer step: ``{prefix}_loss_label`` and ``{prefix}_loss_rationale`` are the
        summed NLL divided by the tokens, ``{prefix}_loss_mi`` the summed MI term divided by the examples, and
        ``{prefix}_loss`` their weighted sum. None of them depends on the evaluation batch size. ``{prefix}_loss``
        is left out (the base loop's stays) when a :meth:`compute_loss` override returned a loss of its own for a
        flat batch on any process (:meth:`_ComponentStore.add_foreign_loss`).

        Every process joins the one reduction, also a process without examples of its own (a split smaller
        than one evaluation batch per process leaves it only the repeats that fill its batch): skipping it would
        leave the others waiting in theirs."""
        store = self._components["eval"]
        sums, counts, foreign_losses = store.numbers()
        local: dict[str, float] = {"_foreign_losses": foreign_losses}
        for name in COMPONENTS:
            present = name in counts
            local[name] = sums.get(name, 0.0)
            local[f"_count_{name}"] = counts.get(name, 0.0)
            local[f"_with_{name}"] = float(present)  # processes that computed the term
            local[f"_weight_{name}"] = store.loss_weights.get(name, 0.0) if present else 0.0
        totals = self._gather_sum(local)
        metrics: dict[str, float] = {}
        loss = 0.0
        for name in COMPONENTS:
            processes = totals[f"_with_{name}"]
            if processes <= 0:
                continue
            # as in training: a count of 0 (no scored token) gives 0, not a division by zero
            mean = totals[name] / max(totals[f"_count_{name}"], 1.0)
            metrics[f"{prefix}_{name}"] = mean
            loss += totals[f"_weight_{name}"] / processes * mean
        if metrics and totals["_foreign_losses"] == 0:  # else the base loop's mean of the losses it got stays
            metrics[f"{prefix}_loss"] = loss
        return metrics

    def _gather_sum(self, values: dict[str, float]) -> dict[str, float]:
        if self.args.world_size <= 1 or not values:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.args.device)
        tensor = self.accelerator.reduce(tensor, reduction="sum")
        return dict(zip(keys, tensor.tolist()))

    def _gather_mean(self, values: dict[str, float]) -> dict[str, float]:
        world = max(1, self.args.world_size)
        return {k: v / world for k, v in self._gather_sum(values).items()}

    # ------------------------------------------------------------ evaluation

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        """``Seq2SeqTrainer.evaluate`` plus ``{prefix}_loss_*`` components and callback metrics.

        A dict of evaluation sets is evaluated one set at a time with the prefix ``{prefix}_{name}``, and
        ``gen_kwargs`` (``max_new_tokens=...``, ``num_beams=...``) reach every set; the base class loop
        would drop them. On several processes, or with ``dataloader_num_workers`` above 1, an iterable set is
        read into memory first, as :meth:`predict` explains, once per set object: later evaluations (each
        evaluation during training) reuse its rows.

        Examples:
            >>> # trainer.evaluate(features["validation"], max_new_tokens=8)["eval_accuracy"]
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for name, one_set in dataset.items():
                metrics.update(
                    self.evaluate(
                        one_set if eval_dataset is not None else name,
                        ignore_keys,
                        f"{metric_key_prefix}_{name}",
                        **gen_kwargs,
                    )
                )
            return metrics
        if isinstance(dataset, str):  # a name inside a dict-valued self.eval_dataset
            dataset = self.eval_dataset[dataset]
        with self._evaluation_scope(self._sized_eval_set(dataset), metric_key_prefix, gen_kwargs):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """The Trainer's evaluation dataloader, over the set read into memory where :meth:`evaluate` reads it.

        ``eval_dataset`` is, as for the base class, a set, a name in a dict-valued ``eval_dataset`` or ``None``
        (the trainer's own set); a named set keeps its name as the key of a dataloader kept with
        ``dataloader_persistent_workers``.

        Examples:
            >>> # trainer.get_eval_dataloader("ood")  # the loader of trainer.eval_dataset["ood"]
        """
        if isinstance(eval_dataset, str):
            dataset = self.eval_dataset[eval_dataset]
        else:
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        sized = self._sized_eval_set(dataset)
        if sized is dataset:
            return super().get_eval_dataloader(eval_dataset)
        key = eval_dataset if isinstance(eval_dataset, str) else "eval"
        kept = getattr(self, "_eval_dataloaders", {})
        if self.args.dataloader_persistent_workers and key in kept:
            return kept[key]
        return self._get_dataloader(
            dataset=sized,
            description="Evaluation",
            batch_size=self.args.eval_batch_size,
            sampler_fn=self._get_eval_sampler,
            dataloader_key=key,
        )

    def _sized_eval_set(self, dataset: Any) -> Any:
        """:meth:`_sized_when_read_in_parts` of an evaluation set, read once per set object."""
        if dataset is None:
            return None
        cached = self._sized_eval_sets.get(id(dataset))
        if cached is not None and cached[0] is dataset:
            return cached[1]
        sized = self._sized_when_read_in_parts(dataset)
        if sized is not dataset:  # keeps the set itself too, so its id() names no other set meanwhile
            self._sized_eval_sets[id(dataset)] = (dataset, sized)
        return sized

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        """The base loop, gathering predictions, labels and losses with ``gather_for_metrics``, its metrics with
        the evaluation loss and its components (:meth:`_evaluation_components`).

        ``Seq2SeqTrainer.evaluate`` and ``predict`` switch to ``accelerator.gather``, which keeps the examples
        a distributed sampler repeats to even out the last batch, and transformers 5 no longer cuts the
        gathered arrays back to the dataset's length: under DDP, ``compute_metrics`` (accuracy) and
        ``predict`` would count those examples twice. ``gather_for_metrics`` drops them.

        The components are merged here, before the base ``evaluate``/``predict`` log the metrics or hand them
        to callbacks (``on_evaluate``, ``on_predict``), so every one of them sees the returned values. A
        :meth:`compute_loss` override that returned a loss of its own for a flat batch keeps the base loop's
        ``{prefix}_loss`` (see the class docstring).
        """
        gather = self.accelerator.gather_for_metrics
        if "use_gather_object" in inspect.signature(gather).parameters:
            gather = functools.partial(gather, use_gather_object=self.args.eval_use_gather_object)
        self.gather_function = gather
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        output.metrics.update(self._evaluation_components(metric_key_prefix))
        self._components["eval"] = _ComponentStore()
        return output

    @contextlib.contextmanager
    def _evaluation_scope(
        self, dataset: Any, metric_key_prefix: str, gen_kwargs: dict[str, Any] | None = None
    ) -> Iterator[None]:
        """Fresh eval component sums, and the dataset, prefix and generation options that ``log()`` and
        callbacks need."""
        self._components["eval"] = _ComponentStore()
        generation = {k: v for k, v in (gen_kwargs or {}).items() if v is not None}
        self._evaluation_context = (dataset, metric_key_prefix, generation)
        try:
            yield
        finally:
            self._evaluation_context = None

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        """Loss over both tasks, then generated labels (and rationales with ``output_rationale``); with
        ``predict_with_generate=False``, as ``Seq2SeqTrainer`` does, the label task's logits and the labels
        they are scored against (a decoder-only student's: its target positions)."""
        if "pred" not in inputs:
            return self._flat_prediction_step(model, inputs, prediction_loss_only, ignore_keys, gen_kwargs)
        self._expose_inputs_for_metrics(inputs)
        inputs = self._prepare_inputs(inputs)
        pred, expl = inputs["pred"], inputs.get("expl")
        has_labels = "labels" in pred
        wants_logits = has_labels and not prediction_loss_only and not self.args.predict_with_generate
        loss = outputs = None
        if has_labels:
            batch_size = pred["labels"].shape[0]
            own = self._rows_not_repeated(batch_size)
            # the loss of this process's own examples; a batch of repeats only fills its place in the
            # gather (gather_for_metrics drops it), so its loss is the whole batch's and is not summed
            scored = inputs if own in (0, batch_size) else _first_rows(inputs, own, batch_size)
            with torch.no_grad(), self.compute_loss_context_manager():
                result = self._dss_loss(model, scored, None, wants_logits and scored is inputs)
                outputs = result.outputs
                if wants_logits and scored is not inputs:  # every row's logits: the gather drops the repeats
                    outputs = self._dss_loss(model, inputs, None, True).outputs
            loss = result.loss.detach()
            if own > 0:
                self._components["eval"].add_totals(result.totals)
        if wants_logits:
            return loss, outputs["logits"], outputs["target_labels"]
        if prediction_loss_only or not self.args.predict_with_generate:
            return loss, None, None

        label_ids = self._generate_ids(model, pred, ignore_keys, gen_kwargs)
        predictions: Any = label_ids
        if self.args.output_rationale and expl is not None:
            rationale_kwargs = dict(gen_kwargs or getattr(self, "_gen_kwargs", {}))
            rationale_kwargs.pop("max_length", None)
            rationale_kwargs["max_new_tokens"] = self.args.rationale_max_new_tokens
            rationale_ids = self._generate_ids(model, expl, ignore_keys, rationale_kwargs)
            predictions = (label_ids, rationale_ids)
        elif self.args.output_rationale and not getattr(self, "_warned_no_rationale_inputs", False):
            logger.warning(
                "output_rationale=True but the features have no rationale-task inputs (expl_input_ids, "
                "expl_attention_mask, rationale_labels), so no rationales are generated and predict() writes no "
                "predictions.jsonl; build the features from data with a rationale column "
                "(hf_cotmi.prepare_dss_features) or use hf_cotmi.generation.predict_texts for raw inputs"
            )
            self._warned_no_rationale_inputs = True
        labels = None
        if has_labels:
            labels = pred["labels"]
            if self.student_type == "causal":
                labels = labels[:, _prompt_width(labels) :]  # the target and EOS, as generation returns
            width = label_ids.shape[-1]
            if labels.shape[-1] < width:
                pad = torch.full((labels.shape[0], width - labels.shape[-1]), -100, dtype=labels.dtype)
                labels = torch.cat([labels, pad.to(labels.device)], dim=-1)
        return loss, predictions, labels

    def _flat_prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None,
        gen_kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        """``Seq2SeqTrainer.prediction_step`` for a flat batch, its loss from :meth:`_dss_loss` (chunked where
        the head allows it, as in training).

        - The loss alone, or the loss and generated labels (``predict_with_generate``): the base class would
          compute the loss after generating with ``model(**inputs)``, the full logits of every position; it
          gets a stand-in for ``model`` there (:class:`_LossOnlyModel`) that returns :meth:`_dss_loss`'s.
        - ``predict_with_generate=False`` and predictions wanted (``predict()``): the predictions *are* the
          label logits, so this one case computes them (the unchunked path). The label ids returned are then
          the labels those logits are scored against, position by position, as for a DSS batch: a
          decoder-only student's target window (its logits cover only the positions that predict a target),
          not the batch's full-width labels, which cover its prompt too and could not be aligned with them. A
          label in column 0, which no position predicts (the loss leaves it out too), is not among them.
        """
        generates = self.args.predict_with_generate and not prediction_loss_only
        self._label_logits_are_predictions = not prediction_loss_only and not self.args.predict_with_generate
        self._evaluating_flat_batch = True  # compute_loss adds the batch's sums to the evaluation's
        self._flat_batch_loss = None  # and says which loss it computed
        self._flat_batch_target_labels = None  # and, keeping the label logits, what they are scored against
        loss_model: Any = model
        if generates:
            loss_model = _LossOnlyModel(lambda batch: self.compute_loss(model, batch))
        try:
            with _generation_config_kept(self.model):
                loss, predictions, labels = super().prediction_step(
                    loss_model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs
                )
        finally:
            self._label_logits_are_predictions = False
            self._evaluating_flat_batch = False
            target_labels, self._flat_batch_target_labels = self._flat_batch_target_labels, None
        # the label logits, unless a compute_loss override returned outputs of its own
        if (
            target_labels is not None
            and isinstance(predictions, torch.Tensor)
            and predictions.shape[:2] == target_labels.shape
        ):
            labels = target_labels.detach()
        # a compute_loss override may return a loss of its own (see the class docstring)
        if loss is not None:
            ours, self._flat_batch_loss = self._flat_batch_loss, None
            differs = (
                torch.ones((), device=loss.device)
                if ours is None
                else loss.ne(ours.detach().to(loss.device, loss.dtype).mean())
            )
            self._components["eval"].add_foreign_loss(differs)
        return loss, predictions, labels

    def _add_evaluation_totals(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        totals: dict[str, tuple[torch.Tensor, torch.Tensor, float]],
    ) -> None:
        """Add a flat evaluation batch's loss sums and counts to the evaluation's: those of this process's own
        rows (:meth:`_rows_not_repeated`; a last batch that repeats some rows is scored again without them)."""
        batch_size = inputs["labels"].shape[0]
        own = self._rows_not_repeated(batch_size)
        if own == 0:
            return
        if own < batch_size:
            with torch.no_grad():
                totals = self._dss_loss(model, _first_rows(inputs, own, batch_size), None).totals
        self._components["eval"].add_totals(totals)

    def _rows_not_repeated(self, batch_size: int) -> int:
        """How many of this process's ``batch_size`` evaluation rows are its own examples, not repeats.

        With several processes, accelerate fills the last global batch up to the same size on every process
        with examples from the start of the dataset; the dataset's last examples come first, in process
        order, and ``gather_for_metrics`` keeps only those (its ``remainder``). The repeats must not count
        in the evaluation loss either.
        """
        accelerator = self.accelerator
        state = accelerator.gradient_state
        if accelerator.num_processes <= 1 or not accelerator.even_batches:
            return batch_size
        if not state.end_of_dataloader or state.remainder <= 0:
            return batch_size
        before = accelerator.process_index * batch_size
        return max(0, min(batch_size, state.remainder - before))

    def _expose_inputs_for_metrics(self, inputs: dict[str, Any]) -> None:
        """``include_for_metrics=["inputs"]``: put the label task's inputs at the batch's top level.

        The evaluation loop reads ``inputs[model.main_input_name]`` after :meth:`prediction_step`, which a
        nested ``{"pred": ..., "expl": ...}`` batch does not have. It gets the ``predict:`` input ids (for a
        decoder-only student the prompt columns only, without the target).
        """
        if "inputs" not in (self.args.include_for_metrics or []):
            return
        name = getattr(self.model, "main_input_name", "input_ids")
        pred = inputs["pred"]
        if name in inputs or "input_ids" not in pred:
            return
        ids = pred["input_ids"]
        if self.student_type == "causal" and "labels" in pred:
            ids = ids[:, : _prompt_width(pred["labels"])]
        inputs[name] = ids

    def _generate_ids(
        self,
        model: nn.Module,
        part: dict[str, Any],
        ignore_keys: list[str] | None,
        gen_kwargs: dict[str, Any],
    ) -> torch.Tensor:
        """Generated ids for one task's sub-batch: only the new tokens, padded with the pad id."""
        if self.student_type != "causal":
            inputs = {k: v for k, v in part.items() if k in ("input_ids", "attention_mask")}
            with _generation_config_kept(self.model):
                _, ids, _ = super().prediction_step(model, inputs, False, ignore_keys, **gen_kwargs)
            return ids
        return self._generate_causal(part, gen_kwargs)

    def _generate_causal(self, part: dict[str, Any], gen_kwargs: dict[str, Any]) -> torch.Tensor:
        """Generate from the left-padded prompt columns of a target-aligned batch; return the new tokens.

        ``max_length`` (from ``generation_max_length``) bounds the *generated* tokens for a decoder-only
        student, as it bounds the decoder output of a seq2seq one; without it the generation config's
        ``max_new_tokens`` (else its ``max_length``) does. A ``generation_config`` passed to
        :meth:`evaluate`/:meth:`predict` is used as ``generate`` uses it, its ``max_new_tokens`` included.
        Generation stops at EOS.
        """
        kwargs, limit = self._causal_generation_kwargs(gen_kwargs)
        input_ids, attention_mask = part["input_ids"], part.get("attention_mask")
        if "labels" in part:
            labels = part["labels"]
            width = _prompt_width(labels)
            aligned = width == labels.shape[1] or (
                not bool(labels[:, :width].ne(-100).any()) and bool(labels[:, width].ne(-100).all())
            )
            if not aligned:
                raise ValueError(
                    "the batch is not target-aligned (every row's target must start at the same column); "
                    "use hf_cotmi.DSSDataCollator(tokenizer, model=model) for decoder-only students"
                )
            input_ids = input_ids[:, :width]
            attention_mask = attention_mask[:, :width] if attention_mask is not None else None
        input_ids, attention_mask = self._leave_room(input_ids, attention_mask, limit)
        method = prompt_learning_method(self.model)
        with torch.no_grad():
            if method is not None:
                return self._generate_with_virtual_tokens(input_ids, attention_mask, kwargs, limit, method)
            generated = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self._pad_new_tokens(generated[:, input_ids.shape[1] :], limit)

    def _pad_new_tokens(self, new_tokens: torch.Tensor, limit: int) -> torch.Tensor:
        """Generated tokens padded on the right with the generation config's pad id (else EOS) to ``limit``."""
        if new_tokens.shape[1] >= limit:
            return new_tokens
        pad_id = self.model.generation_config.pad_token_id
        if pad_id is None:
            pad_id = self.model.generation_config.eos_token_id
        pad_id = pad_id[0] if isinstance(pad_id, (list, tuple)) else pad_id
        fill = torch.full(
            (new_tokens.shape[0], limit - new_tokens.shape[1]), int(pad_id), dtype=new_tokens.dtype
        )
        return torch.cat([new_tokens, fill.to(new_tokens.device)], dim=1)

    def _generate_with_virtual_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        kwargs: dict[str, Any],
        limit: int,
        method: str,
    ) -> torch.Tensor:
        """New tokens of a student with prompt-learning adapters, each row generated as it is alone.

        Generation runs under :func:`hf_cotmi.causal_confidence.exact_generation` (no key-value cache), and
        for prompt tuning and p-tuning the left-padded rows go in calls of one prompt length, unpadded
        (:func:`hf_cotmi.causal_confidence.generation_groups`). Under ``synced_gpus`` (DeepSpeed ZeRO-3, FSDP)
        every process must call ``generate`` as often as the others: the batch then goes in one call, and a
        warning says that its padded rows are off.
        """
        from .causal_confidence import exact_generation, generation_groups

        rows_count, width = input_ids.shape
        lengths = attention_mask.sum(-1).tolist() if attention_mask is not None else [width] * rows_count
        groups = generation_groups(self.model, lengths)
        if len(groups) > 1 and kwargs.get("synced_gpus"):
            self._warn_padded_generation(method)
            groups = [list(range(rows_count))]
        out: torch.Tensor | None = None
        with exact_generation(self.model) as exact:
            for rows in groups:
                index = torch.tensor(rows, dtype=torch.long, device=input_ids.device)
                # left padding: the group's tokens are its last columns
                first = width - max(1, *(int(lengths[row]) for row in rows))
                ids = input_ids.index_select(0, index)[:, first:]
                mask = (
                    attention_mask.index_select(0, index)[:, first:] if attention_mask is not None else None
                )
                generated = self.model.generate(input_ids=ids, attention_mask=mask, **{**kwargs, **exact})
                new_tokens = self._pad_new_tokens(generated[:, ids.shape[1] :], limit)
                per_row = new_tokens.shape[0] // len(rows)  # num_return_sequences
                if out is None:
                    out = new_tokens.new_zeros((rows_count * per_row, new_tokens.shape[1]))
                places = (index[:, None] * per_row + torch.arange(per_row, device=index.device)).flatten()
                out[places.to(out.device)] = new_tokens
        assert out is not None
        return out

    def _warn_padded_generation(self, method: str) -> None:
        """Say once that a sharded evaluation generates left-padded rows with ``method`` adapters off."""
        if getattr(self, "_warned_padded_generation", False):
            return
        logger.warning(
            "%s adapters with synced_gpus (DeepSpeed ZeRO-3 or FSDP): every process must call generate as often "
            "as the others, so each evaluation batch is generated in one call from left-padded prompts. peft "
            "puts %s's virtual tokens in front of the padding and ignores position_ids, so a prompt shorter "
            "than the longest of its batch is generated at shifted positions and its labels can differ from "
            "what it generates alone; set per_device_eval_batch_size=1 (or evaluate unsharded) for exact "
            "generations",
            method,
            method,
        )
        self._warned_padded_generation = True

    def _causal_generation_kwargs(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """``generate`` arguments for a decoder-only student, and the number of new tokens they allow.

        The limit is :meth:`_generation_limit`'s (a ``max_length`` is read as new tokens: it counts the prompt
        too, and a prompt longer than it would leave no room). A passed ``generation_config`` is copied with the
        other generation options set on it, since ``generate`` deprecates getting both.
        """
        kwargs = dict(gen_kwargs or getattr(self, "_gen_kwargs", {}))
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        limit, _ = self._generation_limit(kwargs)
        kwargs.pop("max_length", None)
        given = kwargs.pop("generation_config", None)
        kwargs["max_new_tokens"] = limit
        kwargs.setdefault("synced_gpus", _is_deepspeed_zero3() or _is_fsdp(self.model))
        if "eos_token_id" not in kwargs and getattr(given, "eos_token_id", None) is None:
            kwargs.update(self._causal_stop_at_eos())
        if given is not None:
            config = copy.deepcopy(given)
            kwargs = {**config.update(**kwargs), "generation_config": config}
        return kwargs, limit

    def _leave_room(
        self, input_ids: torch.Tensor, attention_mask: Any, max_new_tokens: int
    ) -> tuple[Any, Any]:
        """Left-padded prompts cut as training truncation cuts them so that ``max_new_tokens`` generated
        tokens still fit the student's context (:func:`hf_cotmi.students.generation_prompt_limit`);
        unchanged when they already fit.

        A plain prompt keeps its start; a chat prompt (one that ends with the tokenizer's chat template's
        assistant header) loses the end of the user's content and keeps that header
        (:func:`hf_cotmi.causal_confidence.fit_prompts_to_room`).
        """
        from .causal_confidence import fit_prompts_to_room, left_pad
        from .students import generation_prompt_limit

        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        room = generation_prompt_limit(self.model, tokenizer, max_new_tokens)
        if room is None or input_ids.shape[1] <= room:
            return input_ids, attention_mask
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows = [ids[keep.bool()].tolist() for ids, keep in zip(input_ids, mask)]
        rows = fit_prompts_to_room(tokenizer, rows, room, chat_template=None)
        pad_id = self.model.generation_config.pad_token_id
        pad_id = pad_id[0] if isinstance(pad_id, (list, tuple)) else pad_id
        ids, cut_mask, _ = left_pad(rows, 0 if pad_id is None else pad_id, torch, input_ids.device)
        return ids, cut_mask

    def _causal_stop_at_eos(self) -> dict[str, Any]:
        """``generate`` arguments that stop a decoder-only student at the EOS its targets end with.

        ``generate`` stops only at the generation config's EOS. Where that names none (a BERT checkpoint
        used as a decoder, with ``tokenizer.eos_token`` set by hand), the model config's or else the
        tokenizer's EOS is passed, so a generated label does not run on past it into the metrics.
        """
        from .students import eos_token_ids, stop_at_eos_kwargs

        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        return stop_at_eos_kwargs(self.model, eos_token_ids(self.model, tokenizer))

    def _generation_limit(self, kwargs: dict[str, Any]) -> tuple[int, str]:
        """How many new tokens a decoder-only student generates with the ``generate`` options ``kwargs`` (none of
        them ``None``), and the setting that says so, as :meth:`_causal_generation_kwargs` reads them.

        First found: ``max_new_tokens``; the passed ``generation_config``'s ``max_new_tokens`` (which
        ``generate`` puts above a ``max_length``); ``max_length`` (``generation_max_length``); the passed
        generation config's ``max_length``; the model's generation config (the ``generation_config`` training
        argument when one was given) ``max_new_tokens``, else its ``max_length``, read as new tokens; else 20.
        """
        given = kwargs.get("generation_config")
        model_config = self.model.generation_config
        max_length = kwargs.get("max_length")
        model_source = (
            "generation_config" if self.args.generation_config is not None else "model.generation_config"
        )
        found = [
            ("max_new_tokens", kwargs.get("max_new_tokens")),
            ("generation_config.max_new_tokens", getattr(given, "max_new_tokens", None)),
            (
                "generation_max_length" if max_length == self.args.generation_max_length else "max_length",
                max_length,
            ),
            ("generation_config.max_length", getattr(given, "max_length", None)),
            (f"{model_source}.max_new_tokens", model_config.max_new_tokens),
            (f"{model_source}.max_length", model_config.max_length),
        ]
        for source, value in found:
            if value:
                return int(value), source
        return 20, "the default max_new_tokens"

    def _evaluation_generates_during_training(self) -> bool:
        """Whether the evaluations ``train()`` runs generate predictions: an ``eval_strategy``,
        ``predict_with_generate`` and predictions kept (:meth:`prediction_step` generates unless
        ``prediction_loss_only``, which the base ``evaluate`` sets without ``compute_metrics``). An
        :class:`~hf_cotmi.ECECallback` generates at each evaluation whatever these say
        (:meth:`_ece_generation_lengths`)."""
        args = self.args
        return (
            args.eval_strategy != "no"
            and args.predict_with_generate
            and self.compute_metrics is not None
            and not args.prediction_loss_only
        )

    def _check_generation_room(
        self, gen_kwargs: dict[str, Any] | None = None, *, predictions: bool = True
    ) -> None:
        """Refuse generation lengths a decoder-only student's context cannot hold, before they are used.

        Such a student generates after its prompt, in one context, so evaluation that generates fails on a
        label or rationale generation length at or above its context length
        (:func:`hf_cotmi.students.generation_prompt_limit`). The lengths are the ones :meth:`evaluate` with
        ``gen_kwargs`` uses: with ``predictions`` and ``predict_with_generate`` those of the predictions
        (:meth:`_prediction_generation_lengths`), and always those of each :class:`~hf_cotmi.ECECallback` that
        generates (:meth:`_ece_generation_lengths`), which runs at every evaluation. :meth:`train` calls it
        when it evaluates (an ``eval_strategy``), with ``predictions`` when those evaluations generate
        predictions (:meth:`_evaluation_generates_during_training`), so the error comes before the first step
        instead of after the whole run. The error, a :class:`~hf_cotmi.students.GenerationLengthError`, names
        the setting, its value and the context length, and the callback that generates with it; its
        ``generates`` says whether the length is the labels' or the rationales', its ``confidence`` the
        callback's mode.
        """
        if self.model is None or self.student_type != "causal":
            return
        from .students import GenerationLengthError, generation_prompt_limit

        kwargs = {k: v for k, v in (gen_kwargs or {}).items() if v is not None}
        # (new tokens, the setting, what they generate, the confidence of the ECECallback that generates them)
        asked: list[tuple[int, str, str, str | None]] = []
        if predictions and self.args.predict_with_generate:
            lengths = zip(self._prediction_generation_lengths(kwargs), ("labels", "rationales"))
            asked += [(limit, source, generates, None) for (limit, source), generates in lengths]
        asked += [
            (limit, source, "labels", mode) for limit, source, mode in self._ece_generation_lengths(kwargs)
        ]
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        for limit, source, generates, confidence in asked:
            try:
                generation_prompt_limit(self.model, tokenizer, limit, argument=source)
            except GenerationLengthError as err:
                refused = (err.setting, err.value, err.context)
                raise GenerationLengthError(*refused, generates, confidence) from None

    def _prediction_generation_lengths(self, gen_kwargs: dict[str, Any]) -> list[tuple[int, str]]:
        """The new tokens :meth:`prediction_step` generates with the ``evaluate()`` options ``gen_kwargs`` (none of
        them ``None``), each with the setting that says so: the label's (:meth:`_generation_limit`;
        ``generation_max_length`` unless ``gen_kwargs`` set a length), and with ``output_rationale`` the
        rationale's (``rationale_max_new_tokens``, else the same settings without ``max_length``)."""
        args = self.args
        kwargs = dict(gen_kwargs)
        if "max_length" not in kwargs and "max_new_tokens" not in kwargs and args.generation_max_length:
            kwargs["max_length"] = args.generation_max_length  # as Seq2SeqTrainer.evaluate sets it
        asked = [self._generation_limit(kwargs)]
        if args.output_rationale:  # as prediction_step generates the rationales
            rationale = {k: v for k, v in kwargs.items() if k not in ("max_length", "max_new_tokens")}
            if args.rationale_max_new_tokens:
                rationale["max_new_tokens"] = args.rationale_max_new_tokens
            limit, source = self._generation_limit(rationale)
            asked.append((limit, "rationale_max_new_tokens" if source == "max_new_tokens" else source))
        return asked

    def _ece_generation_lengths(self, gen_kwargs: dict[str, Any]) -> list[tuple[int, str, str]]:
        """The new tokens each :class:`~hf_cotmi.ECECallback` among the callbacks generates at an evaluation with
        the ``evaluate()`` options ``gen_kwargs`` (none of them ``None``), as ``(limit, setting, confidence)``,
        ``confidence`` being the callback's mode.

        The length is the one the callback's generation takes (:meth:`ECECallback.generation_length
        <hf_cotmi.callbacks.ECECallback.generation_length>`); without one the model's generation config decides, read as
        :meth:`_generation_limit` reads it. Candidates mode scores the candidates and generates nothing.
        """
        lengths = []
        for callback in self.callback_handler.callbacks:
            if not isinstance(callback, ECECallback) or callback.mode == "candidates":
                continue
            found = callback.generation_length(gen_kwargs, self.args)
            limit, source = (found[1], found[2]) if found is not None else self._generation_limit({})
            lengths.append((limit, source, callback.mode))
        return lengths

    def _prepare_causal_generation(self) -> None:
        """A decoder-only student's generation config pads with the tokenizer's pad id (EOS as a fallback)."""
        if self.model is None or self.student_type != "causal":
            return
        config = getattr(self.model, "generation_config", None)
        tokenizer = self.processing_class
        if config is None or config.pad_token_id is not None:
            return
        pad = getattr(tokenizer, "pad_token_id", None)
        config.pad_token_id = pad if pad is not None else config.eos_token_id

    def predict(
        self,
        test_dataset: Any,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        """``Seq2SeqTrainer.predict`` with the ``{prefix}_loss_*`` components in its metrics, as
        :meth:`evaluate` reports them; with ``output_rationale=True`` predictions are ``(labels, rationales)``
        token ids and ``predictions.jsonl`` (one ``{"prediction", "rationale"}`` object per example, with
        ``"input"`` when the dataset has that column) is written to the output directory. Predictions come
        in the dataset's order, also with ``train_sampling_strategy="group_by_length"`` (see
        :meth:`get_test_dataloader`), and a ``datasets.IterableDataset`` is predicted too.

        On several processes an iterable set (one without a length, or any ``torch.utils.data.IterableDataset``)
        is first read, in its order, into a ``datasets.Dataset`` (a list of its rows if it is no
        ``datasets.IterableDataset``) on every process, which holds the whole set in memory: accelerate
        shares an iterable set out without knowing where it ends, so with ``dispatch_batches=False`` it
        repeats rows from the start to fill the last batch (predict would return more rows than the set,
        counted in the metrics too) or, for a set of several shards, reads the shards out of order, and with
        dispatch (its default) it refuses batches padded to different lengths. It is read into memory the same
        way on one process with ``dataloader_num_workers`` above 1: PyTorch hands every worker the whole
        iterable set, so a ``datasets.IterableDataset`` of several shards gives each worker its own shards and
        the DataLoader takes their batches in turn (predictions out of the dataset's order, each line of
        ``predictions.jsonl`` with another example's input), and a ``torch.utils.data.IterableDataset`` that
        does not split itself between workers is read whole by each (every example counted once per worker).
        Read into memory, the set is shared out by index. With one worker or none, an iterable set on one
        process stays streamed.

        Examples:
            >>> # output = trainer.predict(features["test"]); label_ids, rationale_ids = output.predictions
        """
        test_dataset = self._sized_when_read_in_parts(test_dataset)
        with self._evaluation_scope(test_dataset, metric_key_prefix, gen_kwargs):
            output = super().predict(test_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)
        if (
            self.args.output_rationale
            and isinstance(output.predictions, tuple)
            and self.is_world_process_zero()
        ):
            self._write_predictions(test_dataset, output)
        return output

    def _sized_when_read_in_parts(self, dataset: Any) -> Any:
        """``dataset`` itself when one process reads it with at most one dataloader worker, else
        :func:`~hf_cotmi.dataset_rows.sized_rows`: its rows read in order into memory where accelerate or the
        DataLoader's workers could not share it out by index. :meth:`predict` explains why."""
        if self.args.world_size <= 1 and self.args.dataloader_num_workers <= 1:
            return dataset
        return sized_rows(dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """The Trainer's test dataloader, reading ``test_dataset`` in its own order.

        With ``train_sampling_strategy="group_by_length"`` transformers reads evaluation *and prediction* sets
        in a shuffled, length-grouped order, so :meth:`predict` would return its predictions (and write
        ``predictions.jsonl``, each line with the ``input`` of the dataset row at its position) in an order
        that is not the dataset's. Prediction reads the set as the Trainer does without length grouping:
        in order on one process, sharded in order by accelerate on several. Evaluation, whose metrics do not
        depend on the order, keeps the grouping.

        Examples:
            >>> # trainer.predict(features["test"]).predictions[i] is the prediction for features["test"][i]
        """
        return self._get_dataloader(
            dataset=test_dataset,
            description="test",
            batch_size=self.args.eval_batch_size,
            sampler_fn=self._sampler_in_order,
        )

    def _sampler_in_order(self, dataset: Any) -> torch.utils.data.Sampler | None:
        """The Trainer's evaluation sampler without length grouping: sequential on one process, none on several
        (accelerate then shards the set in order)."""
        return torch.utils.data.SequentialSampler(dataset) if self.args.world_size <= 1 else None

    def decode_predictions(self, predictions: Any, label_ids: Any = None) -> list[dict[str, str]]:
        """Decode ``predict()``'s predictions into ``[{"prediction": ..., "rationale": ...}, ...]``.

        ``predictions`` are generated token ids, or ``(label ids, rationale ids)`` with ``output_rationale``
        (a rationale is None without them), or, with ``predict_with_generate=False``, the label logits,
        read as their argmax. Teacher-forced logits run on over the positions after a row's end in its padded
        batch: give ``label_ids`` (``predict()``'s ``label_ids``, the labels the logits are scored against)
        and each row is read at its label positions only, up to its first EOS, so it decodes as it does in a
        batch of its own (see :func:`~hf_cotmi.metrics.decode_token_ids`). Without them a row the student
        does not end with EOS where its label ends reads its batch's padding too, and its text depends on the
        evaluation batch size. Generated ids ignore ``label_ids``.

        Args:
            predictions: ``predict()``'s ``predictions``.
            label_ids: ``predict()``'s ``label_ids``, in the same layout; needed only for logits.

        Returns:
            One ``{"prediction", "rationale"}`` dict per example, texts stripped.

        Raises:
            ValueError: the trainer has no ``processing_class``, or ``label_ids`` hold another number of rows
                than the logits.

        Examples:
            >>> # output = trainer.predict(features["test"])
            >>> # rows = trainer.decode_predictions(output.predictions, label_ids=output.label_ids)
            >>> # rows[0]  -> {'prediction': '9', 'rationale': None}
        """
        tokenizer = self.processing_class
        if tokenizer is None:
            raise ValueError("decode_predictions needs the trainer's processing_class (the tokenizer)")
        ids, rationale_ids = predictions if isinstance(predictions, tuple) else (predictions, None)

        def decode(ids: Any, labels: Any = None) -> list[str]:
            return [text.strip() for text in decode_token_ids(tokenizer, ids, label_ids=labels)]

        texts = decode(ids, label_ids)  # the rationales are generated: label_ids are the label task's
        rationales = decode(rationale_ids) if rationale_ids is not None else [None] * len(texts)
        return [{"prediction": p, "rationale": r} for p, r in zip(texts, rationales)]

    def _write_predictions(self, dataset: Any, output: PredictionOutput) -> None:
        rows = self.decode_predictions(output.predictions, label_ids=output.label_ids)
        texts = None
        if "input" in (getattr(dataset, "column_names", None) or []):
            # a datasets.IterableDataset has column names but no column lists: read its rows in order
            texts = dataset["input"] if hasattr(dataset, "__len__") else [row["input"] for row in dataset]
        os.makedirs(self.args.output_dir, exist_ok=True)
        path = os.path.join(self.args.output_dir, "predictions.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            for index, row in enumerate(rows):
                record = {"input": texts[index]} if texts is not None else {}
                record.update(row)
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        logger.info("wrote %d predictions to %s", len(rows), path)

    # ------------------------------------------------------------ bookkeeping

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Estimated FLOPs of both passes (the base class only sees a flat batch)."""
        if "pred" not in inputs:
            return super().floating_point_ops(inputs)
        return sum(super(DSSMITrainer, self).floating_point_ops(part) for part in inputs.values())

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write ``README.md`` into the output directory: metadata, usage, loss settings, results, BibTeX.

        The card is rendered from ``hf_cotmi/templates/model_card_template.md`` with what
        ``trainer.model_card_callback`` recorded during training (see :meth:`model_card_data`).

        Examples:
            >>> # trainer.create_model_card(model_name="t5-small-svamp-dssmi", dataset="svamp")
        """
        if not self.is_world_process_zero():
            return
        card = self.model_card_data(
            model_name=model_name, finetuned_from=finetuned_from, dataset=dataset or dataset_tags, tags=tags
        )
        card.license, card.language = license, language
        self._say_where_the_base_model_came_from(finetuned_from)
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(render_model_card(card))

    def model_card_data(
        self,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        dataset: str | list[str] | None = None,
        tags: str | list[str] | None = None,
    ) -> DSSModelCardData:
        """A copy of the card data ``model_card_callback`` filled during training (hyperparameters, losses,
        metrics), with the names added: model name, repository id, base model, datasets and extra tags, the
        library (``peft`` for a student saved as adapters, else ``transformers``), and the confidence mode and
        candidates of the :class:`~hf_cotmi.ECECallback` among the trainer's callbacks (the card says how its
        ECE was measured).

        Examples:
            >>> # trainer.model_card_data().loss_settings["mi_loss_weight"]
        """
        card = self.model_card_callback.card_data
        if model_name is None:
            model_name = self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        unwrapped = self.accelerator.unwrap_model(self.model)
        local_base_model = None
        if finetuned_from is None:
            # a Hub name, or the repository of a folder in the Hugging Face cache; any other folder is no Hub id
            # to link: the card names it by its base name, never its path
            finetuned_from, local_base_model = card_base_model(self._base_model_name_or_path())
        # The usage snippet needs the full repository id; push_to_hub passes only the part after the "/".
        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        if "/" in model_name or not repo_id:
            repo_id = model_name
        return dataclasses.replace(
            card,
            model_name=model_name,
            repo_id=repo_id,
            library_name="peft" if _has_peft_adapters(unwrapped) else "transformers",
            base_model=finetuned_from,
            local_base_model=local_base_model,
            datasets=[dataset] if isinstance(dataset, str) else list(dataset or []),
            extra_tags=[tags] if isinstance(tags, str) else list(tags or []),
            **self._ece_confidence(),
        )

    def _base_model_name_or_path(self) -> str:
        """The name or path the student was loaded from, as its config records it (``_name_or_path``; a
        ``PeftModel`` gives its base model's); empty for a model built from a config."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        return getattr(getattr(unwrapped, "config", None), "_name_or_path", "") or ""

    def _say_where_the_base_model_came_from(self, finetuned_from: str | None) -> None:
        """Log what the card's ``base_model`` is when the student was loaded from a folder and
        ``finetuned_from`` was not given: the repository of a Hugging Face cache folder (info), or none (a
        warning naming ``finetuned_from`` and ``--model`` when the card is for the Hub, else info); and for
        adapters, that their ``adapter_config.json`` names the folder by its local path (peft writes it),
        which other machines do not have (a warning when the card is for the Hub, else info)."""
        path = self._base_model_name_or_path()
        hub_id, _ = card_base_model(path)
        if not path or hub_id == path:
            return  # built from a config, or loaded by its Hub name
        for_hub = bool(self.args.push_to_hub or self.hub_model_id)
        said = logger.warning if for_hub else logger.info
        if finetuned_from is None and hub_id is not None:
            logger.info(
                "the model card names base_model %r: the student was loaded from %s, a snapshot of that Hub "
                "repository in the Hugging Face cache",
                hub_id,
                path,
            )
        elif finetuned_from is None:
            said(
                "the model card leaves base_model out of its metadata: the student was loaded from the folder "
                "%s, which names no Hugging Face Hub repository. If it is a copy of a Hub model, give its Hub "
                "name: finetuned_from='org/name' to push_to_hub() or create_model_card(), or --model org/name "
                "to hf-cotmi train (a downloaded model loads from the Hugging Face cache)",
                path,
            )
        if _has_peft_adapters(self.accelerator.unwrap_model(self.model)):
            hub_name = finetuned_from or hub_id or "org/name"
            said(
                "the adapters' adapter_config.json names their base model by the local path %s "
                "(base_model_name_or_path, which peft writes), so peft loads them only where that folder is "
                "(elsewhere hf-cotmi evaluate/predict need --base-model); to push adapters that load anywhere, "
                "train from the base model's Hub name (from_pretrained(%r), --model %s)",
                path,
                hub_name,
                hub_name,
            )

    def _ece_confidence(self) -> dict[str, Any]:
        """The card's ``confidence_mode`` and ``label_candidates`` from the ECE callback; none without one."""
        ece = next((c for c in self.callback_handler.callbacks if isinstance(c, ECECallback)), None)
        if ece is None:
            return {}
        candidates = ece.label_candidates
        if candidates is not None and not isinstance(candidates, str):
            candidates = [str(label) for label in candidates]
        return {"confidence_mode": ece.mode, "label_candidates": candidates}

    def _initial_model_card_data(self) -> DSSModelCardData:
        """What the card knows before training: the prefixes, loss settings, tags, papers and versions."""
        import transformers

        return DSSModelCardData(
            loss_settings=self.args.loss_settings(),
            predict_prefix=self.args.predict_prefix,
            explain_prefix=self.args.explain_prefix,
            tags=list(self._tag_names),
            papers=list(self._papers),
            framework_versions={"transformers": transformers.__version__, "torch": torch.__version__},
            model_class="AutoModelForCausalLM" if self.student_type == "causal" else "AutoModelForSeq2SeqLM",
            prompt_start_ids=self._prompt_start_ids(),
            label_max_new_tokens=self._label_max_new_tokens(),
            rationale_max_new_tokens=self.args.rationale_max_new_tokens,
            nli_separator=self._nli_separator(),
        )

    def _label_max_new_tokens(self) -> int:
        """The new tokens evaluation lets a generated label take (:func:`hf_cotmi.pipeline.label_new_tokens`
        of ``generation_max_length``), for the card's usage snippet; the card's default without one."""
        limit = self.args.generation_max_length
        if not limit:
            return DEFAULT_LABEL_MAX_NEW_TOKENS
        from .pipeline import label_new_tokens

        return label_new_tokens(self.model, int(limit))

    def _nli_separator(self) -> str:
        """What the features put between premise and hypothesis for this tokenizer (its EOS), else ``</s>``."""
        from .data.dss import DEFAULT_NLI_SEPARATOR
        from .data.features import default_nli_separator

        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        try:
            return default_nli_separator(tokenizer)
        except ValueError:
            return DEFAULT_NLI_SEPARATOR

    def _prompt_start_ids(self) -> list[int]:
        """The ids training puts before a decoder-only student's prompt (empty for seq2seq students)."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        if self.student_type != "causal" or tokenizer is None or not callable(tokenizer):
            return []
        from .data.causal import leading_special_ids

        return [int(t) for t in leading_special_ids(tokenizer)]
