"""Calibration of a saved student, outside a training run: accuracy, ECE, average confidence, diagram."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .calibration import Binning, check_binning
from .confidence import ConfidenceMode, label_confidences
from .dataset_rows import num_rows
from .prefixes import PREDICT_PREFIX

__all__ = ["evaluate_calibration"]


def evaluate_calibration(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    confidence: ConfidenceMode | None = None,
    label_candidates: Sequence[str] | str | None = None,
    n_bins: int = 10,
    binning: Binning = "uniform",
    label_column: str = "label",
    input_column: str = "input",
    prefix: str = PREDICT_PREFIX,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    num_beams: int = 1,
    is_correct: Callable[[str, str], bool] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    device: str | None = None,
    task: Any = None,
    chat_template: bool = False,
    progress_bar: str | None = None,
) -> dict[str, Any]:
    """Accuracy, expected calibration error and average confidence of a student on a dataset.

    Args:
        model: a seq2seq or decoder-only ``PreTrainedModel``, or the path (or Hub name) of a saved one (full
            weights or LoRA adapters), loaded with :func:`hf_cotmi.students.load_student` (which picks
            ``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM`` from its config).
        tokenizer: its tokenizer; ``None`` loads ``AutoTokenizer.from_pretrained`` from ``model`` when that is
            a path.
        dataset: raw ``input``/``label`` text or tokenised DSS features (see :func:`hf_cotmi.label_confidences`).
        confidence: ``"candidates"``, ``"sequence"`` or ``"first_token"``; default ``"candidates"`` when
            ``label_candidates`` is given, otherwise ``"sequence"``.
        label_candidates: fixed label strings, or the name of a column with each example's candidates.
        n_bins: number of ECE bins.
        binning: ``"uniform"`` or ``"quantile"``.
        label_column: gold label text column.
        input_column: raw input text column (used when there is no ``input_ids`` column).
        prefix: prepended to raw inputs (the DSS ``predict:`` prefix).
        batch_size: examples per encoder pass.
        max_new_tokens: generation limit (generation modes); ``None`` defers to the model's generation config
            (its ``max_new_tokens``, else its ``max_length``: 20 unless the model sets one). ``hf-cotmi
            evaluate`` passes the label length the training run saved.
        num_beams: beams for generation.
        is_correct: ``is_correct(prediction, gold) -> bool``; default: normalised exact match.
        plot_path: when given, also save a reliability diagram PNG there.
        device: move a model loaded from a path to this device (default: CUDA when available, else CPU).
        task: a :class:`~hf_cotmi.tasks.TaskSpec` or built-in task name; it supplies ``confidence``,
            ``label_candidates`` and ``is_correct`` where those are not given.
        chat_template: a decoder-only student trained with ``chat_template=True`` (see
            :func:`hf_cotmi.label_confidences`).
        progress_bar: show a ``tqdm`` progress bar over the examples with this description (candidates
            mode: a second one, ``"<description> (generated labels)"``, for the generated label's pass);
            ``None`` (the default) shows none. ``hf-cotmi evaluate`` shows one unless ``--disable-tqdm``.

    Returns:
        ``{"accuracy", "ece", "avg_confidence", "num_examples", "confidence_mode", "n_bins", "binning"}`` plus
        ``"reliability_diagram"`` (the PNG path) when ``plot_path`` is given. In candidates mode
        ``"accuracy"`` and the ECE belong to the arg-max candidate (the confidence's own prediction), also
        reported as ``"choice_accuracy"``, and ``"generated_accuracy"`` is the accuracy of the label the
        student generates (greedy, ``max_new_tokens``). All rates are fractions in [0, 1].

    Raises:
        ValueError: an invalid ``n_bins`` or ``binning`` (before the model is loaded or scored), an empty
            ``dataset``, or what :func:`hf_cotmi.label_confidences` refuses.

    Examples:
        >>> from hf_cotmi import evaluate_calibration
        >>> # evaluate_calibration("out/checkpoint-500", None, anli_test,
        >>> #                      label_candidates=["entailment", "neutral", "contradiction"],
        >>> #                      plot_path="out/reliability.png")
        >>> # {'accuracy': 0.41, 'ece': 0.12, 'avg_confidence': 0.53, 'num_examples': 1200, ...}
    """
    check_binning(n_bins, binning)  # before loading and scoring the model, not after
    if num_rows(dataset) == 0:
        raise ValueError("`dataset` is empty; expected at least one example to measure calibration on")
    if task is not None:
        from .tasks import get_task

        spec = get_task(task) if isinstance(task, str) else task
        confidence, label_candidates = spec.confidence_for(confidence, label_candidates)  # type: ignore[assignment]
        is_correct = is_correct or spec.is_correct
    if isinstance(model, (str, os.PathLike)):
        from .students import load_student

        model, saved_tokenizer, _ = load_student(model, for_inference=True, device=device)
        tokenizer = saved_tokenizer if tokenizer is None else tokenizer
    if tokenizer is None:
        raise ValueError("`tokenizer` is None; pass the tokenizer, or give `model` as a path to load both")
    result = label_confidences(
        model,
        tokenizer,
        dataset,
        mode=confidence,
        label_candidates=label_candidates,
        label_column=label_column,
        input_column=input_column,
        prefix=prefix,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        is_correct=is_correct,
        chat_template=chat_template,
        progress_bar=progress_bar,
    )
    report: dict[str, Any] = {
        "accuracy": result.accuracy,
        "ece": result.ece(n_bins, binning),
        "avg_confidence": result.average_confidence,
        "num_examples": len(result),
        "confidence_mode": result.mode,
        "n_bins": n_bins,
        "binning": binning,
    }
    if result.mode == "candidates":
        # the arg-max candidate is a choice the student ranks, not the label it generates: report both
        generated = label_confidences(
            model,
            tokenizer,
            dataset,
            mode="sequence",
            label_column=label_column,
            input_column=input_column,
            prefix=prefix,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            is_correct=is_correct,
            chat_template=chat_template,
            progress_bar=None if progress_bar is None else f"{progress_bar} (generated labels)",
        )
        report["choice_accuracy"] = result.accuracy
        report["generated_accuracy"] = generated.accuracy
    if plot_path is not None:
        from .plotting import save_reliability_diagram

        report["reliability_diagram"] = save_reliability_diagram(
            result.confidences,
            result.correct,
            plot_path,
            n_bins=n_bins,
            binning=binning,
            title=f"{result.mode} confidence, {len(result)} examples",
        )
    return report
