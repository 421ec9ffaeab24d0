"""``DSSMITrainer``: a ``Seq2SeqTrainer`` that trains Distilling Step-by-Step with the MI loss.

The maths lives in :mod:`hf_cotmi.losses`; this module only wires it into the Trainer: the two forward
passes, loss normalisation over the whole accumulated (and distributed) batch, logging of the loss
components, generation for evaluation, PEFT wrapping and the model card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
from transformers.trainer_utils import PredictionOutput

from .arguments import DSSMITrainingArguments
from .callbacks import StopOnNonFiniteCallback
from .collator import DSSDataCollator
from .losses import rationale_nll_and_mutual_information
from .model_card import PAPERS, TAGS, DSSModelCardCallback, DSSModelCardData, Paper, render_model_card

logger = logging.getLogger("hf_cotmi")

COMPONENTS = ("loss_label", "loss_rationale", "loss_mi")
# Index of each count in the tensor that ``_get_num_items_in_batch`` returns.
_LABEL_TOKENS, _RATIONALE_TOKENS, _EXAMPLES = 0, 1, 2


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


class DSSMITrainer(Seq2SeqTrainer):
    """Drop-in ``Seq2SeqTrainer`` for Distilling Step-by-Step plus the mutual-information loss.

    Each training batch from :class:`~hf_cotmi.DSSDataCollator` is ``{"pred": ..., "expl": ...}``. The
    trainer runs the ``predict:`` pass and the ``explain:`` pass and minimises
    ``label_loss_weight * label_loss + rationale_loss_weight * rationale_loss + mi_loss_weight * mi_loss``
    (see :class:`~hf_cotmi.DSSMITrainingArguments`). A flat batch (plain ``input_ids``/``labels``) trains
    as ordinary seq2seq.

    - Both cross-entropies are token means over the whole optimizer step (all gradient-accumulation
      micro-batches and all processes), and the MI term is an example mean over it, so (batch 8,
      accumulation 1) and (batch 2, accumulation 4) give the same loss and gradients.
    - ``loss_label``, ``loss_rationale`` and ``loss_mi`` are logged beside ``loss`` in training and
      ``eval_loss_*`` in evaluation. The evaluation loss is the same weighted objective as in training,
      MI term included (the released code left it out of the evaluation loss); features without
      rationales give the label term only.
    - ``mi_variant="paper"`` reduces over padded positions too, so its value depends on how far a batch
      is padded; ``"masked"`` does not.
    - With ``predict_with_generate`` evaluation generates labels from the ``predict:`` input; with
      ``output_rationale=True`` it also generates rationales, and :meth:`predict` returns
      ``predictions=(label_ids, rationale_ids)`` and writes ``predictions.jsonl``.
    - ``peft_config`` wraps the model with PEFT; only the adapter trains and is saved.

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
        if peft_config is not None:
            if model is None:
                raise ValueError("peft_config needs a model to wrap; model is None")
            try:
                from peft import get_peft_model
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "peft_config needs the `peft` package: pip install 'hf-cotmi[peft]'"
                ) from error
            model = get_peft_model(model, peft_config)
        if data_collator is None and processing_class is not None and hasattr(processing_class, "pad"):
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
        if self.args.stop_on_non_finite:  # finite or stop (see StopOnNonFiniteCallback)
            self.add_callback(StopOnNonFiniteCallback(self))
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        self.model_card_callback = DSSModelCardCallback(self._initial_model_card_data())
        self.add_callback(self.model_card_callback)
        self._component_sums: dict[str, dict[str, float]] = {
            "train": defaultdict(float),
            "eval": defaultdict(float),
        }
        self._eval_examples = 0
        self._component_steps: set[int] = set()
        self._evaluation_context: tuple[Any, str] | None = None

    # ------------------------------------------------------------------ loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        """Count label tokens, rationale tokens and examples over all micro-batches of one optimizer step.

        Returns a float tensor ``[3]`` summed over processes, or defers to the Trainer for flat batches of
        models that are not DSS batches.
        """
        if not batch_samples or not isinstance(batch_samples[0], dict):
            return super()._get_num_items_in_batch(batch_samples, device)
        counts = torch.zeros(3, dtype=torch.float64)
        for batch in batch_samples:
            pred = batch["pred"] if "pred" in batch else batch
            if "labels" not in pred:
                return None
            counts[_LABEL_TOKENS] += pred["labels"].ne(-100).sum().item()
            counts[_EXAMPLES] += pred["labels"].shape[0]
            if "expl" in batch:
                counts[_RATIONALE_TOKENS] += batch["expl"]["labels"].ne(-100).sum().item()
        counts = counts.to(device)
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return counts

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Weighted sum of the label loss, the rationale loss and the MI loss (see the class docstring)."""
        loss, components, outputs = self._dss_loss(model, inputs, num_items_in_batch)
        # The loss is normalised over the whole accumulated batch: the Trainer must not divide it again.
        self.loss_is_scaled_for_ga = (
            isinstance(num_items_in_batch, torch.Tensor) and num_items_in_batch.numel() == 3
        )
        if model.training:
            sums = self._component_sums["train"]
            for name, value in components.items():
                sums[name] += value
            # global_step is constant over the micro-batches of one optimizer step
            self._component_steps.add(self.state.global_step)
        return (loss, outputs) if return_outputs else loss

    def _decoder_input_ids(self, labels: torch.Tensor) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        if not hasattr(model, "prepare_decoder_input_ids_from_labels"):
            raise ValueError(
                f"{type(model).__name__} cannot build decoder_input_ids from labels; give DSSDataCollator the "
                "model (DSSDataCollator(tokenizer, model=model)) or add decoder_input_ids to the batch"
            )
        return model.prepare_decoder_input_ids_from_labels(labels=labels)

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        model_inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "decoder_input_ids" not in model_inputs:
            model_inputs["decoder_input_ids"] = self._decoder_input_ids(labels)
        outputs = model(**model_inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return logits, labels

    def _dss_loss(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, Any]]:
        args = self.args
        pred = inputs["pred"] if "pred" in inputs else inputs
        expl = inputs.get("expl") if "pred" in inputs else None
        if "labels" not in pred:
            raise ValueError("the batch has no 'labels': the label task needs targets to compute a loss")

        global_counts = isinstance(num_items_in_batch, torch.Tensor) and num_items_in_batch.numel() == 3
        world = self.accelerator.num_processes if global_counts else 1

        def denominator(index: int, local: torch.Tensor) -> torch.Tensor:
            total = num_items_in_batch[index] if global_counts else local
            return total.to(torch.float32).clamp_min(1.0) / world

        label_logits, labels = self._forward(model, pred)
        vocab = label_logits.shape[-1]
        label_sum = F.cross_entropy(
            label_logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        label_loss = label_sum / denominator(_LABEL_TOKENS, labels.ne(-100).sum())
        flat = "pred" not in inputs
        if flat:
            return label_loss, {"loss_label": label_loss.detach().item()}, {"logits": label_logits}

        loss = args.label_loss_weight * label_loss
        components = {"loss_label": label_loss.detach().item()}
        outputs: dict[str, Any] = {"logits": label_logits}
        needs_rationale = args.rationale_loss_weight > 0 or args.mi_loss_weight > 0
        if needs_rationale and expl is None:
            if model.training:
                raise ValueError(
                    "rationale_loss_weight or mi_loss_weight is > 0 but the batch has no rationale part "
                    "('expl'); give the training features expl_input_ids, expl_attention_mask and "
                    "rationale_labels (hf_cotmi.prepare_dss_features does)"
                )
            needs_rationale = False
        if needs_rationale:
            rationale_logits, rationale_labels = self._forward(model, expl)
            # One log-softmax serves both the rationale cross-entropy and the MI term.
            rationale_log_probs = torch.log_softmax(rationale_logits, dim=-1, dtype=torch.float32)
            del rationale_logits
            if args.mi_loss_weight > 0:
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
            rationale_loss = rationale_sum / denominator(_RATIONALE_TOKENS, rationale_labels.ne(-100).sum())
            loss = loss + args.rationale_loss_weight * rationale_loss
            components["loss_rationale"] = rationale_loss.detach().item()
            if args.mi_loss_weight > 0:
                local_examples = torch.tensor(float(labels.shape[0]), device=labels.device)
                mi_loss = mi_mean * local_examples / denominator(_EXAMPLES, local_examples)
                loss = loss + args.mi_loss_weight * mi_loss
                components["loss_mi"] = mi_loss.detach().item()
        return loss, components, outputs

    # --------------------------------------------------------------- logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged loss components to training and evaluation logs, then log as usual."""
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            steps = len(self._component_steps)
            sums = self._component_sums["train"]
            if steps > 0 and sums:
                values = self._gather_mean({k: sums[k] / steps for k in COMPONENTS if k in sums})
                logs.update({k: round(v, 6) for k, v in values.items()})
            self._component_sums["train"] = defaultdict(float)
            self._component_steps = set()
        elif self._evaluation_context is not None:
            dataset, prefix = self._evaluation_context
            if f"{prefix}_loss" in logs or any(k.startswith(f"{prefix}_") for k in logs):
                sums = self._component_sums["eval"]
                if self._eval_examples > 0 and sums:
                    totals = self._gather_sum({**sums, "_examples": float(self._eval_examples)})
                    examples = totals.pop("_examples")
                    logs.update({f"{prefix}_{k}": v / examples for k, v in totals.items()})
                for callback in self.callback_handler.callbacks:
                    hook = getattr(callback, "evaluation_metrics", None)
                    if callable(hook):
                        logs.update(hook(self, dataset, prefix) or {})
                self._evaluation_context = None
        super().log(logs, start_time)

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
        would drop them.
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
        with self._evaluation_scope(dataset, metric_key_prefix):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)

    @contextlib.contextmanager
    def _evaluation_scope(self, dataset: Any, metric_key_prefix: str) -> Iterator[None]:
        """Fresh eval component sums, and the dataset and prefix that ``log()`` and callbacks need."""
        self._component_sums["eval"] = defaultdict(float)
        self._eval_examples = 0
        self._evaluation_context = (dataset, metric_key_prefix)
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
        """Loss over both tasks, then generated labels (and rationales with ``output_rationale``)."""
        if "pred" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
        inputs = self._prepare_inputs(inputs)
        pred, expl = inputs["pred"], inputs.get("expl")
        has_labels = "labels" in pred
        loss = None
        if has_labels:
            with torch.no_grad(), self.compute_loss_context_manager():
                loss, components, _ = self._dss_loss(model, inputs, None)
            loss = loss.detach()
            batch_size = pred["labels"].shape[0]
            for name, value in components.items():
                self._component_sums["eval"][name] += value * batch_size
            self._eval_examples += batch_size
        if prediction_loss_only or not self.args.predict_with_generate:
            return loss, None, None

        generation_inputs = {k: v for k, v in pred.items() if k in ("input_ids", "attention_mask")}
        _, label_ids, _ = super().prediction_step(model, generation_inputs, False, ignore_keys, **gen_kwargs)
        predictions: Any = label_ids
        if self.args.output_rationale and expl is not None:
            rationale_kwargs = dict(gen_kwargs or getattr(self, "_gen_kwargs", {}))
            rationale_kwargs.pop("max_length", None)
            rationale_kwargs["max_new_tokens"] = self.args.rationale_max_new_tokens
            explain_inputs = {k: v for k, v in expl.items() if k in ("input_ids", "attention_mask")}
            _, rationale_ids, _ = super().prediction_step(
                model, explain_inputs, False, ignore_keys, **rationale_kwargs
            )
            predictions = (label_ids, rationale_ids)
        labels = None
        if has_labels:
            labels = pred["labels"]
            width = label_ids.shape[-1]
            if labels.shape[-1] < width:
                pad = torch.full((labels.shape[0], width - labels.shape[-1]), -100, dtype=labels.dtype)
                labels = torch.cat([labels, pad.to(labels.device)], dim=-1)
        return loss, predictions, labels

    def predict(
        self,
        test_dataset: Any,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        """``Seq2SeqTrainer.predict``; with ``output_rationale=True`` predictions are ``(labels, rationales)``
        token ids and ``predictions.jsonl`` (one ``{"prediction", "rationale"}`` object per example) is
        written to the output directory.

        Examples:
            >>> # output = trainer.predict(features["test"]); label_ids, rationale_ids = output.predictions
        """
        with self._evaluation_scope(test_dataset, metric_key_prefix):
            output = super().predict(test_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)
        if (
            self.args.output_rationale
            and isinstance(output.predictions, tuple)
            and self.is_world_process_zero()
        ):
            self._write_predictions(test_dataset, output)
        return output

    def decode_predictions(self, predictions: Any) -> list[dict[str, str]]:
        """Decode ``predict()``'s token ids into ``[{"prediction": ..., "rationale": ...}, ...]``.

        Examples:
            >>> # rows = trainer.decode_predictions(trainer.predict(features["test"]).predictions)
        """
        tokenizer = self.processing_class
        if tokenizer is None:
            raise ValueError("decode_predictions needs the trainer's processing_class (the tokenizer)")
        label_ids, rationale_ids = predictions if isinstance(predictions, tuple) else (predictions, None)

        def decode(ids: Any) -> list[str]:
            ids = torch.as_tensor(ids)
            ids = torch.where(ids == -100, torch.full_like(ids, tokenizer.pad_token_id), ids)
            return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

        labels = decode(label_ids)
        rationales = decode(rationale_ids) if rationale_ids is not None else [None] * len(labels)
        return [{"prediction": p, "rationale": r} for p, r in zip(labels, rationales)]

    def _write_predictions(self, dataset: Any, output: PredictionOutput) -> None:
        rows = self.decode_predictions(output.predictions)
        texts = (
            dataset["input"] if hasattr(dataset, "column_names") and "input" in dataset.column_names else None
        )
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
        metrics), with the names added: model name, repository id, base model, datasets and extra tags.

        Examples:
            >>> # trainer.model_card_data().loss_settings["mi_loss_weight"]
        """
        card = self.model_card_callback.card_data
        if model_name is None:
            model_name = self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        if finetuned_from is None:
            unwrapped = self.accelerator.unwrap_model(self.model)
            name = getattr(getattr(unwrapped, "config", None), "_name_or_path", "") or ""
            finetuned_from = name if name and not os.path.isdir(name) else None
        # The usage snippet needs the full repository id; push_to_hub passes only the part after the "/".
        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        if "/" in model_name or not repo_id:
            repo_id = model_name
        return dataclasses.replace(
            card,
            model_name=model_name,
            repo_id=repo_id,
            base_model=finetuned_from,
            datasets=[dataset] if isinstance(dataset, str) else list(dataset or []),
            extra_tags=[tags] if isinstance(tags, str) else list(tags or []),
        )

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
        )
