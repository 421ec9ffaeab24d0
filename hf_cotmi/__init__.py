"""hf-cotmi: chain-of-thought distillation for Hugging Face students, seq2seq and decoder-only.

Distilling Step-by-Step (Hsieh et al., 2023) trains one student on two tasks, ``predict:`` -> label and
``explain:`` -> rationale; Chen et al. (Findings of ACL 2024) add a mutual-information term that ties the
two together. ``DSSMITrainer`` is a drop-in ``Seq2SeqTrainer`` that does both.

Examples:
    >>> from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, DSSDataCollator
    >>> args = DSSMITrainingArguments("out", mi_loss_weight=0.1)  # doctest: +SKIP

Public names are imported lazily, so ``import hf_cotmi`` stays cheap (no torch or transformers until a
name that needs them is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # core (losses, arguments, collator, trainer)
    "mutual_information_loss": "losses",
    "chunked_dss_losses": "chunked_losses",
    "chunked_linear_cross_entropy": "chunked_losses",
    "DSSMITrainingArguments": "arguments",
    "DSSDataCollator": "collator",
    "DSSMITrainer": "trainer",
    # the model card
    "DSSModelCardData": "model_card",
    "DSSModelCardCallback": "model_card",
    "resolve_student_type": "student_types",
    # data
    "load_dss_dataset": "data.dss",
    "load_cot_dataset": "data.custom",
    "prepare_dss_features": "data.features",
    "DSS_DATASETS": "data.dss",
    "make_arithmetic_cot_dataset": "data.synthetic",
    "DSSLoadReport": "data.report",
    "CoTLoadReport": "data.report",
    "FeaturesReport": "data.report",
    "read_input_lines": "data.textfiles",
    "single_task_target": "data.parsing",
    "parse_single_task_label": "data.parsing",
    "parse_single_task_rationale": "data.parsing",
    # resuming: the latest complete checkpoint
    "latest_complete_checkpoint": "checkpoints",
    "resolve_resume_checkpoint": "checkpoints",
    "checkpoint_problems": "checkpoints",
    # metrics
    "safe_eval_arithmetic": "metrics",
    "equation_accuracy": "metrics",
    "text_accuracy": "metrics",
    "build_compute_metrics": "metrics",
    # calibration
    "expected_calibration_error": "calibration",
    "average_confidence": "calibration",
    "reliability_diagram_data": "calibration",
    "label_confidences": "confidence",
    "ECECallback": "callbacks",
    "StopOnNonFiniteCallback": "callbacks",
    "NonFiniteLossError": "callbacks",
    "evaluate_calibration": "evaluation",
    "save_reliability_diagram": "plotting",
    "CalibrationBins": "calibration",
    "LabelConfidences": "confidence",
    "ece_metric_path": "evaluate_metrics",
    # tiny models and tokenizers built in code (tests, offline demo, notebooks)
    "build_word_tokenizer": "tiny",
    "build_tiny_seq2seq": "tiny",
    # task policy: one spec per task
    "TaskSpec": "tasks",
    "get_task": "tasks",
    "save_training_curve": "plotting",
    "build_tiny_causal_lm": "tiny",
    # the offline demo behind `hf-cotmi demo`
    "run_demo": "demo",
    "generate_rationales": "teacher.generate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hf_cotmi' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hf_cotmi.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .arguments import DSSMITrainingArguments as DSSMITrainingArguments
    from .chunked_losses import chunked_dss_losses as chunked_dss_losses
    from .chunked_losses import chunked_linear_cross_entropy as chunked_linear_cross_entropy
    from .collator import DSSDataCollator as DSSDataCollator
    from .losses import mutual_information_loss as mutual_information_loss
    from .trainer import DSSMITrainer as DSSMITrainer
