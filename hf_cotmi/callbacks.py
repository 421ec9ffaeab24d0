"""``ECECallback``: expected calibration error and average confidence at every evaluation.

Two ways in, depending on the trainer:

- :class:`hf_cotmi.DSSMITrainer` calls ``callback.evaluation_metrics(trainer, eval_dataset,
  metric_key_prefix)`` during ``evaluate()`` *before* the evaluation metrics are logged, and merges the
  returned ``{prefix}_ece`` / ``{prefix}_avg_confidence`` into them. They therefore reach
  ``trainer.state.log_history``, every reporting integration (TensorBoard, W&B, ...), the model card,
  ``evaluate()``'s return value and ``metric_for_best_model``.
- A plain ``transformers.Trainer`` / ``Seq2SeqTrainer`` has no such hook. Then :meth:`ECECallback.on_evaluate`
  computes the same numbers after the fact and adds them to the ``metrics`` dict in place: they reach
  ``evaluate()``'s return value and best-model selection, but **not** the log history, the integrations or
  the model card, because the Trainer has already logged by the time ``on_evaluate`` runs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from transformers import TrainerCallback

from .calibration import Binning, check_binning
from .confidence import (
    CONFIDENCE_MODES,
    ConfidenceMode,
    LabelConfidences,
    check_candidates_mode,
    label_confidences,
)
from .dataset_rows import num_rows, row_range, sized_rows
from .device_reads import read_floats
from .prefixes import PREDICT_PREFIX
from .tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

__all__ = ["ECECallback"]


def _rows_for_calibration(dataset: Any, prefix: str) -> Any:
    """``dataset`` with rows to count and slice: an iterable set (the Trainer evaluates those too) read into
    memory (:func:`~hf_cotmi.dataset_rows.sized_rows`); a set that gives no rows when read again is refused."""
    read = sized_rows(dataset)
    if read is not dataset and num_rows(read) == 0:
        raise ValueError(
            f"ECECallback: the `{prefix}` evaluation set (a {type(dataset).__name__}) gave no rows when read for "
            "calibration; on one process the callback reads an iterable set again after the trainer's "
            "evaluation loop has read it, and this one can be read only once (a generator or iterator behind "
            "it?): give a datasets.Dataset, a list of rows, or an iterable set that gives its rows again at each "
            "read (a datasets.IterableDataset does)"
        )
    return read


class ECECallback(TrainerCallback):
    """Log ``{prefix}_ece`` and ``{prefix}_avg_confidence`` for each evaluation dataset at each evaluation.

    In candidates mode it also logs ``{prefix}_choice_accuracy``: the accuracy of the most likely candidate
    (for a multiple-choice task, choice ranking). The ECE is computed against that candidate's correctness,
    the one its confidence belongs to; the generated label's accuracy is the trainer's own
    ``{prefix}_accuracy`` (from ``compute_metrics``), so the two stand side by side in the logs.

    With ``eval_dataset`` a dict (e.g. ``{"id": ..., "ood": ...}``), each named set gets its own keys
    (``eval_id_ece``, ``eval_ood_ece``, ...): this is how in-domain and out-of-domain calibration are tracked
    side by side. Any of the keys can serve as ``metric_for_best_model`` (``DSSMITrainingArguments`` then
    defaults ``greater_is_better`` to ``False``; give it yourself with other training arguments).

    Args:
        n_bins: number of ECE bins.
        confidence: ``"candidates"``, ``"sequence"`` or ``"first_token"`` (see
            :func:`hf_cotmi.label_confidences`); default ``"candidates"`` when ``label_candidates`` is given,
            otherwise ``"sequence"``.
        label_candidates: a fixed list of label strings, or the name of a column holding each example's
            candidates (e.g. ``"choices"``; the column must survive, so keep ``remove_unused_columns=False``).
            Candidates mode only: with ``confidence="sequence"`` or ``"first_token"`` it is a ``ValueError``.
        plot: write a reliability diagram per evaluation and dataset to
            ``{output_dir}/reliability_diagrams/{prefix}_step{global_step}.png``; a later evaluation at the
            same step and prefix (``trainer.evaluate()`` after training) writes ``..._step{global_step}_2.png``
            and so on, never over an earlier one (a diagram that cannot be written is logged as a warning; it
            never stops training).
        binning: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass) bins.
        label_column: column with the gold label text (otherwise the gold label is decoded from ``labels``).
        is_correct: ``is_correct(prediction, gold) -> bool`` for generation modes and candidates; default:
            normalised exact match.
        batch_size: examples per encoder pass; default: ``args.per_device_eval_batch_size``.
        max_new_tokens: generation limit for ``"sequence"`` / ``"first_token"``; default:
            ``args.generation_max_length`` (as a total ``max_length``; for a decoder-only student, as the number
            of new tokens), else the model's generation config. Options passed to ``trainer.evaluate()``
            (``max_new_tokens``, ``max_length``, ``num_beams``, a ``generation_config``) win over this and the
            arguments for that call, as they do for the accuracy. The beams are the accuracy's too: those
            options, else ``args.generation_num_beams``, else the model's generation config (which
            ``args.generation_config`` replaces).
        task: a :class:`~hf_cotmi.tasks.TaskSpec` or built-in task name; it supplies ``confidence``,
            ``label_candidates`` and ``is_correct`` where those are not given.
        chat_template: a decoder-only student trained on ``chat_template=True`` features: candidates are
            scored as its assistant turn (see :func:`hf_cotmi.label_confidences`).

    Scoring is a pass over the evaluation set of its own, after the trainer's evaluation loop: the main
    process shows a ``tqdm`` progress bar over its examples (``"eval: sequence confidence"``), which
    ``args.disable_tqdm`` turns off as it does the Trainer's bars.

    After each evaluation, ``callback.last_results[prefix]`` holds the :class:`hf_cotmi.LabelConfidences`
    and ``callback.last_plots[prefix]`` the diagram path.

    Under ``torch.distributed`` (several processes through ``accelerate launch`` or ``torchrun``) each
    process scores its own contiguous share of the evaluation set and the shares are gathered in order, so
    every process ends with the same numbers for the whole set at 1/N of the work. Every process must take
    part, as it does when the trainer evaluates; the diagram is drawn by the main process only.

    Examples:
        >>> from hf_cotmi import ECECallback
        >>> callback = ECECallback(n_bins=15, label_candidates=["entailment", "neutral", "contradiction"])
        >>> # trainer = DSSMITrainer(..., eval_dataset={"anli": anli, "ood": snli}, callbacks=[callback])
        >>> # trainer.evaluate()  ->  {..., "eval_anli_ece": ..., "eval_ood_ece": ..., ...}
        >>> callback.mode
        'candidates'
    """

    def __init__(
        self,
        n_bins: int = 10,
        confidence: ConfidenceMode | None = None,
        label_candidates: Sequence[str] | str | None = None,
        plot: bool = True,
        *,
        binning: Binning = "uniform",
        label_column: str = "label",
        is_correct: Callable[[str, str], bool] | None = None,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        task: TaskSpec | str | None = None,
        chat_template: bool = False,
    ) -> None:
        check_candidates_mode(confidence, label_candidates, "confidence")
        if task is not None:
            spec = get_task(task) if isinstance(task, str) else task
            confidence, label_candidates = spec.confidence_for(confidence, label_candidates)  # type: ignore[assignment]
            is_correct = is_correct or spec.is_correct
        check_binning(n_bins, binning)
        if confidence is not None and confidence not in CONFIDENCE_MODES:
            raise ValueError(f"`confidence` must be one of {CONFIDENCE_MODES} or None; got {confidence!r}")
        if confidence == "candidates" and label_candidates is None:
            raise ValueError(
                "`confidence='candidates'` needs `label_candidates` (label strings or a column name)"
            )
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive integer or None; got {batch_size!r}")
        self.n_bins = n_bins
        self.mode: str = confidence or ("candidates" if label_candidates is not None else "sequence")
        self.label_candidates = label_candidates
        self.binning = binning
        self.label_column = label_column
        self.is_correct = is_correct
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.chat_template = bool(chat_template)
        self.plot = bool(plot)
        self.last_results: dict[str, LabelConfidences] = {}
        self.last_plots: dict[str, str] = {}
        self._handled: set[tuple[int, str]] = set()
        self._drawn: set[str] = set()  # diagram paths this callback has written (none is overwritten)

    # ------------------------------------------------------------------ hook for DSSMITrainer

    def evaluation_metrics(
        self, trainer: Any, eval_dataset: Any, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Compute ``{metric_key_prefix}_ece`` and ``{metric_key_prefix}_avg_confidence`` on ``eval_dataset``.

        Called by :class:`hf_cotmi.DSSMITrainer` during ``evaluate()`` before it logs the metrics (once per
        name when ``eval_dataset`` is a dict); can also be called directly.

        Args:
            trainer: the trainer (its ``model``, ``processing_class``, ``args`` and ``state`` are used).
            eval_dataset: the dataset being evaluated (tokenised DSS features or ``input``/``label`` text); an
                iterable one (a ``datasets.IterableDataset``, a ``torch.utils.data.IterableDataset``) is read into
                memory first (:func:`~hf_cotmi.dataset_rows.sized_rows`). On one process with at most one
                dataloader worker (where the trainer keeps the set streamed) that is a second read of the set at
                each evaluation, after the trainer's evaluation loop: cheap beside the generation
                that scores its rows, but the set must give its rows again at each ``iter()`` (one that can be
                read only once is a ``ValueError``).
            metric_key_prefix: e.g. ``"eval"`` or ``"eval_ood"``.

        Returns:
            ``{f"{metric_key_prefix}_ece": float, f"{metric_key_prefix}_avg_confidence": float}``, plus
            ``f"{metric_key_prefix}_choice_accuracy"`` in candidates mode.

        Examples:
            >>> # ECECallback().evaluation_metrics(trainer, dev_set, "eval")
            >>> # {'eval_ece': 0.083, 'eval_avg_confidence': 0.71}
        """
        step = int(getattr(trainer.state, "global_step", 0))
        self._handled.add((step, metric_key_prefix))
        eval_dataset = _rows_for_calibration(eval_dataset, metric_key_prefix)
        is_main = trainer.is_world_process_zero() if hasattr(trainer, "is_world_process_zero") else True
        return self._compute(
            trainer.model,
            trainer.processing_class,
            eval_dataset,
            trainer.args,
            step,
            metric_key_prefix,
            is_main,
            dict(getattr(trainer, "evaluation_generation_kwargs", None) or {}),
        )

    # ------------------------------------------------------------------ fallback for plain Trainers

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        """Fallback for trainers without the ``evaluation_metrics`` hook: add the keys to ``metrics``.

        Reaches ``evaluate()``'s return value and ``metric_for_best_model``, not the log history (the
        Trainer logged before calling ``on_evaluate``). Does nothing when the hook already ran for this
        evaluation.
        """
        if metrics is None:
            return
        prefix = _prefix_of(metrics)
        step = int(getattr(state, "global_step", 0))
        if (step, prefix) in self._handled or f"{prefix}_ece" in metrics:
            self._handled.discard((step, prefix))
            return
        model, tokenizer = kwargs.get("model"), kwargs.get("processing_class")
        dataloader = kwargs.get("eval_dataloader")
        dataset = getattr(dataloader, "dataset", None)
        if model is None or tokenizer is None or dataset is None or not hasattr(dataset, "__len__"):
            logger.warning(
                "ECECallback.on_evaluate: needs the model, the processing_class (tokenizer) and a sized eval "
                "dataset; skipping calibration for %s",
                prefix,
            )
            return
        dataset = _rows_for_calibration(dataset, prefix)  # a torch IterableDataset with a length has no rows
        metrics.update(
            self._compute(
                model, tokenizer, dataset, args, step, prefix, getattr(state, "is_world_process_zero", True)
            )
        )

    # ------------------------------------------------------------------ shared

    def _compute(
        self,
        model: Any,
        tokenizer: Any,
        dataset: Any,
        args: Any,
        step: int,
        prefix: str,
        is_main: bool,
        generation: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        if tokenizer is None:
            raise ValueError("ECECallback needs the trainer's `processing_class` (the tokenizer)")
        if hasattr(tokenizer, "tokenizer") and not hasattr(tokenizer, "batch_decode"):  # a processor
            tokenizer = tokenizer.tokenizer
        batch_size = self.batch_size or int(getattr(args, "per_device_eval_batch_size", 8) or 8)
        limits = _generation_limits(self.max_new_tokens, generation or {}, args, model)
        world_size, rank = _process_group()
        rows = num_rows(dataset)
        share = (
            dataset
            if world_size == 1
            else row_range(dataset, rank * rows // world_size, (rank + 1) * rows // world_size)
        )
        if num_rows(share) == 0 and world_size > 1:  # fewer examples than processes
            result = LabelConfidences(
                self.mode,
                [],
                [],
                np.zeros(0),
                np.zeros(0, dtype=bool),
                [] if self.mode == "candidates" else None,
            )
        else:
            # a bar beside the Trainer's own (its evaluation loop is the accuracy's pass, this is a second one)
            shown = is_main and not getattr(args, "disable_tqdm", False)
            progress = f"{prefix}: {self.mode} confidence" if shown else None
            result = self._label_confidences(model, tokenizer, share, args, batch_size, limits, progress)
        if world_size > 1:
            import torch.distributed as dist

            shares: list[Any] = [None] * world_size
            dist.all_gather_object(shares, result)
            result = LabelConfidences.concatenate(shares)
        self.last_results[prefix] = result
        metrics = {
            f"{prefix}_ece": result.ece(self.n_bins, self.binning),
            f"{prefix}_avg_confidence": result.average_confidence,
        }
        if result.mode == "candidates":
            # the arg-max candidate's accuracy: the correctness the candidates confidence (and the ECE) is for
            metrics[f"{prefix}_choice_accuracy"] = float(result.accuracy)
        output_dir = getattr(args, "output_dir", None)
        if self.plot and is_main and output_dir:
            from .plotting import save_reliability_diagram

            path = self._diagram_path(output_dir, prefix, step)
            try:
                self.last_plots[prefix] = save_reliability_diagram(
                    result.confidences,
                    result.correct,
                    path,
                    n_bins=self.n_bins,
                    binning=self.binning,
                    title=f"{prefix} at step {step} ({self.mode})",
                )
            except (ImportError, OSError) as err:  # a diagram must never stop training
                logger.warning("ECECallback: could not write the reliability diagram %s: %s", path, err)
        return metrics

    def generation_length(self, generation: dict[str, Any], args: Any) -> tuple[str, int, str] | None:
        """The length limit this callback's generation takes in an evaluation with the ``evaluate()`` options
        ``generation`` and the training arguments ``args``: ``(kind, value, setting)``, ``kind`` being
        ``"max_new_tokens"`` or ``"max_length"`` and ``setting`` where it came from; None when nothing sets one
        (the model's generation config decides then). What the trainer checks against a decoder-only student's
        context before training.

        Args:
            generation: the options of the ``evaluate()`` call (``max_new_tokens``, ``max_length``,
                ``generation_config``), none of them None.
            args: the training arguments (their ``generation_max_length``).

        Returns:
            ``(kind, value, setting)``, or None.

        Examples:
            >>> from types import SimpleNamespace
            >>> ECECallback(confidence="sequence", max_new_tokens=8).generation_length(
            ...     {}, SimpleNamespace(generation_max_length=6))
            ('max_new_tokens', 8, 'ECECallback.max_new_tokens')
        """
        return _generation_length(self.max_new_tokens, generation, args)

    def _diagram_path(self, output_dir: str, prefix: str, step: int) -> str:
        """A path for this evaluation's diagram that no earlier evaluation through this callback has used.

        ``{prefix}_step{step}.png``; a second diagram at the same step (an ``evaluate()`` after training, with
        ``load_best_model_at_end`` the best checkpoint's weights, or two prefixes that differ only in
        characters a file name cannot hold) gets ``_2``, ``_3``, ... rather than replacing the first.
        """
        name = re.sub(r"[^\w.-]+", "_", prefix)
        stem = os.path.join(output_dir, "reliability_diagrams", f"{name}_step{step}")
        path, copy = f"{stem}.png", 1
        while path in self._drawn:
            copy += 1
            path = f"{stem}_{copy}.png"
        self._drawn.add(path)
        return path

    def _label_confidences(
        self,
        model: Any,
        tokenizer: Any,
        dataset: Any,
        args: Any,
        batch_size: int,
        limits: dict[str, Any],
        progress_bar: str | None = None,
    ) -> LabelConfidences:
        return label_confidences(
            model,
            tokenizer,
            dataset,
            mode=self.mode,  # type: ignore[arg-type]
            label_candidates=self.label_candidates if self.mode == "candidates" else None,
            label_column=self.label_column,
            prefix=getattr(args, "predict_prefix", PREDICT_PREFIX),
            batch_size=batch_size,
            max_new_tokens=limits["max_new_tokens"],
            max_length=limits["max_length"],
            num_beams=limits["num_beams"],
            is_correct=self.is_correct,
            chat_template=self.chat_template,
            progress_bar=progress_bar,
        )


def _generation_limits(
    max_new_tokens: int | None, generation: dict[str, Any], args: Any, model: Any = None
) -> dict[str, int | None]:
    """``max_new_tokens``, ``max_length`` and ``num_beams`` of the confidences' generation.

    The options of the ``evaluate()`` call in progress come first (the accuracy's generation used them), a
    ``generation_config`` among them after the explicit ones (``generate`` lets keyword arguments override
    it, and its ``max_new_tokens`` over any ``max_length``); then the callback's own ``max_new_tokens``;
    then the training arguments (``generation_max_length``, ``generation_num_beams``). The beams fall back
    to the model's generation config (what the accuracy's ``generate`` uses: ``args.generation_config``
    replaces it, a checkpoint's ``generation_config.json`` fills it), the length to whatever
    :func:`~hf_cotmi.label_confidences` takes from it.

    Examples:
        >>> from types import SimpleNamespace
        >>> from transformers import GenerationConfig
        >>> args = SimpleNamespace(generation_max_length=6, generation_num_beams=None)
        >>> model = SimpleNamespace(generation_config=GenerationConfig(num_beams=4))
        >>> _generation_limits(None, {}, args, model)
        {'max_new_tokens': None, 'max_length': 6, 'num_beams': 4}
        >>> _generation_limits(None, {"generation_config": GenerationConfig(max_new_tokens=3)}, args, model)
        {'max_new_tokens': 3, 'max_length': None, 'num_beams': 4}
    """
    given = generation.get("generation_config")
    model_config = getattr(model, "generation_config", None)
    beams = (
        generation.get("num_beams")
        or getattr(args, "generation_num_beams", None)
        or getattr(given, "num_beams", None)
        or getattr(model_config, "num_beams", None)
        or 1
    )
    limits: dict[str, int | None] = {"max_new_tokens": None, "max_length": None, "num_beams": int(beams)}
    length = _generation_length(max_new_tokens, generation, args)
    if length is not None:
        kind, value, _ = length
        limits[kind] = value
    return limits


def _generation_length(
    max_new_tokens: int | None, generation: dict[str, Any], args: Any
) -> tuple[str, int, str] | None:
    """The length limit of the confidences' generation, as :func:`_generation_limits` takes it: ``(kind, value,
    setting)``, ``kind`` being ``"max_new_tokens"`` or ``"max_length"`` and ``setting`` where it came from
    (``ECECallback.max_new_tokens`` for the callback's own); None when nothing sets one (the model's generation
    config decides then).

    First found: the ``evaluate()`` call's ``max_new_tokens``, its ``generation_config``'s ``max_new_tokens``, its
    ``max_length``; the callback's ``max_new_tokens``; ``args.generation_max_length``; the call's
    ``generation_config``'s ``max_length``.

    Examples:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(generation_max_length=6)
        >>> _generation_length(None, {}, args), _generation_length(8, {}, args)
        (('max_length', 6, 'generation_max_length'), ('max_new_tokens', 8, 'ECECallback.max_new_tokens'))
        >>> _generation_length(8, {"max_length": 4}, args)
        ('max_length', 4, 'max_length')
    """
    given = generation.get("generation_config")
    found = [
        ("max_new_tokens", generation.get("max_new_tokens"), "max_new_tokens"),
        ("max_new_tokens", getattr(given, "max_new_tokens", None), "generation_config.max_new_tokens"),
        ("max_length", generation.get("max_length"), "max_length"),
        ("max_new_tokens", max_new_tokens, "ECECallback.max_new_tokens"),
        ("max_length", getattr(args, "generation_max_length", None), "generation_max_length"),
        ("max_length", getattr(given, "max_length", None), "generation_config.max_length"),
    ]
    for kind, value, setting in found:
        if value is not None:
            return kind, int(value), setting
    return None


def _process_group() -> tuple[int, int]:
    """(world size, rank) of the initialised ``torch.distributed`` process group, else (1, 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _prefix_of(metrics: dict[str, float]) -> str:
    """The metric key prefix of an evaluation, read off the Trainer's ``{prefix}_runtime`` key."""
    for suffix in ("_runtime", "_loss", "_samples_per_second"):
        for key in metrics:
            if key.endswith(suffix):
                return key[: -len(suffix)]
    return "eval"


# ---------------------------------------------------------------------------------- finite or stop

import math  # noqa: E402  (this section is appended to the module)

__all__ += ["NonFiniteLossError", "StopOnNonFiniteCallback"]


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss, the gradient norm or the weights stopped being finite.

    Raised by :class:`StopOnNonFiniteCallback` out of ``trainer.train()``, so nothing after it runs: no
    final model is saved, and the ``hf-cotmi`` command exits with status 1. The message names the step,
    the loss components and the gradient norm.

    Examples:
        >>> issubclass(NonFiniteLossError, ArithmeticError)
        True
    """


class StopOnNonFiniteCallback(TrainerCallback):
    """Stop training at the first step whose loss or gradient norm is NaN or infinite, before it is applied.

    :class:`~hf_cotmi.DSSMITrainer` adds one by default (``stop_on_non_finite=True`` in
    :class:`~hf_cotmi.DSSMITrainingArguments`; ``False`` leaves it out). Checked at every optimizer step,
    just before ``optimizer.step()``:

    - the loss of the step: ``loss_label``, ``loss_rationale`` and ``loss_mi`` as :class:`~hf_cotmi.DSSMITrainer`
      computed them (the real values, whatever ``logging_nan_inf_filter`` says), and for other trainers the
      Trainer's running loss (real only with ``logging_nan_inf_filter=False``);
    - the gradient norm over all parameters (after clipping when ``max_grad_norm > 0``; a NaN or infinite
      norm leaves NaN gradients behind). Where the gradients are not on the parameters (DeepSpeed ZeRO),
      and under ``fp16``, whose loss scaler overflows gradients on purpose and skips those steps itself, only
      the loss is checked.

    The check reads its numbers from the device once per optimizer step (a :class:`~hf_cotmi.DSSMITrainer` keeps
    the loss components there between logs), not at every micro-batch.

    On a non-finite value it raises :class:`NonFiniteLossError` naming the step (numbered as in the logs),
    the components and the gradient norm. The optimizer never applies that step, so the weights stay as
    they were after the last finite step; checkpoints already written are kept and no final model is
    saved. Before a checkpoint save and at the end of training it also checks that every weight is finite.

    Args:
        trainer: the trainer whose per-step loss to read; without it only gradients and weights are
            checked.

    Examples:
        >>> from hf_cotmi import StopOnNonFiniteCallback
        >>> callback = StopOnNonFiniteCallback()
        >>> # trainer = Seq2SeqTrainer(..., callbacks=[callback]); callback.trainer = trainer
        >>> callback.trainer is None
        True
    """

    def __init__(self, trainer: Any | None = None) -> None:
        self.trainer = trainer
        self._components_before: dict[str, Any] = {}
        self._running_loss_before: Any = None

    # -- what the trainer accumulated so far in this logging interval: tensors where it keeps them on the
    # device (read at the check only, all in one host-device synchronisation), floats otherwise
    def _component_sums(self) -> dict[str, Any]:
        read = getattr(self.trainer, "_training_loss_sums", None)  # DSSMITrainer: a snapshot, on the device
        if not callable(read):
            read = getattr(self.trainer, "training_loss_components", None)  # sums since the last log, floats
        return dict(read()) if callable(read) else {}

    def _running_loss(self) -> Any:
        running = getattr(self.trainer, "_tr_loss", None)  # transformers' accumulated loss since last log
        if running is None:
            return None
        # sum() makes a new tensor: a snapshot of _tr_loss, which the Trainer adds to in place
        return running.detach().float().sum() if hasattr(running, "detach") else float(running)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Remember the sums so far, so the step's own values can be told apart."""
        self._components_before = self._component_sums()
        self._running_loss_before = self._running_loss()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Check the step's loss and gradient norm; raise :class:`NonFiniteLossError` if either is not finite."""
        step = int(state.global_step) + 1
        after = self._component_sums()
        names = list(after)
        before = [self._components_before.get(name, 0.0) for name in names]
        running = self._running_loss()
        # Under fp16 a dynamic loss scaler overflows the gradients now and then on purpose, and skips those
        # steps itself; only the loss says whether training diverged.
        scaled = (
            bool(getattr(args, "fp16", False))
            or getattr(getattr(self.trainer, "accelerator", None), "scaler", None) is not None
        )
        norm_tensor = None if scaled else _gradient_norm_tensor(kwargs.get("model"))
        # every number of the check in one read from the device; the differences are taken in Python, as exact
        # as the sums
        numbers = read_floats([*after.values(), *before, running, self._running_loss_before, norm_tensor])
        components = {name: numbers[i] - numbers[len(names) + i] for i, name in enumerate(names)}
        running, running_before, gradient_norm = numbers[2 * len(names) :]
        loss = None if running is None else running - (running_before or 0.0)
        # transformers' running loss is the real value only without its NaN filter
        real_loss = loss is not None and not getattr(args, "logging_nan_inf_filter", True)
        loss_finite = all(math.isfinite(v) for v in components.values()) and (
            not real_loss or math.isfinite(loss)
        )
        norm_finite = gradient_norm is None or math.isfinite(gradient_norm)
        if loss_finite and norm_finite:
            return
        parts = [f"{name} {value:.6g}" for name, value in components.items()]
        if not parts and real_loss:
            parts = [f"loss {loss:.6g}"]
        losses = ", ".join(parts) if parts else "the loss is not available to this callback"
        norm = "not checked" if gradient_norm is None else f"{gradient_norm:.6g}"
        bad = [
            text
            for text, finite in (("the loss", loss_finite), ("the gradient norm", norm_finite))
            if not finite
        ]
        what = " and ".join(bad) + (" are" if len(bad) > 1 else " is")
        raise NonFiniteLossError(
            f"training stopped at step {step} of {state.max_steps}: {what} not finite ({losses}; "
            f"gradient norm {norm}). The step was not applied and no final model is saved"
            f"{_last_checkpoint_note(args)}. Lower learning_rate, clip gradients with max_grad_norm (e.g. "
            "1.0), or set stop_on_non_finite=False to train on regardless"
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Before a checkpoint save or the end of training, check that every weight is finite."""
        ending = control.should_training_stop or (
            state.max_steps > 0 and state.global_step >= state.max_steps
        )
        if not (control.should_save or ending):
            return
        name = _first_non_finite_parameter(kwargs.get("model"))
        if name is not None:
            raise NonFiniteLossError(
                f"training stopped after step {state.global_step} of {state.max_steps}: the weight {name!r} is "
                f"no longer finite although the loss and gradients were; nothing was saved for this step"
                f"{_last_checkpoint_note(args)}. Lower learning_rate"
            )


def _gradient_norm_tensor(model: Any) -> Any:
    """The 2-norm of all parameter gradients together (NaN or inf when any gradient is), a 0-d tensor on the
    device, or None."""
    import torch

    if model is None:
        return None
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:  # e.g. DeepSpeed ZeRO keeps the gradients in its own partitions
        return None
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)


def _first_non_finite_parameter(model: Any) -> str | None:
    import torch

    if model is None:
        return None
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter.detach()).all()):
            return name
    return None


def _last_checkpoint_note(args: Any) -> str:
    from .checkpoints import latest_complete_checkpoint

    output_dir = getattr(args, "output_dir", None)
    latest = latest_complete_checkpoint(output_dir) if output_dir else None
    return f"; the last complete checkpoint is {latest}" if latest else ""
