"""The option dataclasses of ``hf-cotmi train``/``evaluate``/``demo``: which student, which data, how to evaluate.

:mod:`hf_cotmi.cli` parses the command line into these (plus :class:`~hf_cotmi.DSSMITrainingArguments`)
and :mod:`hf_cotmi.pipeline` reads them; from Python, build them directly.

Examples:
    >>> from hf_cotmi.run_arguments import DataArguments
    >>> DataArguments(dataset="synthetic").synthetic_train_size
    4000
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .confidence import CONFIDENCE_MODES
from .student_types import STUDENT_TYPES
from .tasks import METRICS, TASKS

__all__ = [
    "CLIUsageError",
    "ModelArguments",
    "DataArguments",
    "EvaluationArguments",
    "COLUMN_FIELDS",
    "error_summary",
]


class CLIUsageError(ValueError):
    """A mistake in the command line or configuration; the CLI prints its message as one line.

    Examples:
        >>> str(CLIUsageError("--data-dir is needed"))
        '--data-dir is needed'
    """


def error_summary(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: what a one-line
    error message quotes of the error behind it.

    Examples:
        >>> error_summary(OSError("404 Client Error\\nmore")), error_summary(KeyError())
        ('404 Client Error', 'KeyError')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, the noun with an "s" unless the count is 1: a count in a printed message.

    Examples:
        >>> plural(1, "step"), plural(2, "step"), plural(0, "valid example")
        ('1 step', '2 steps', '0 valid examples')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass
class ModelArguments:
    """Which student to train: a Hub name or local path, or (without one) a small T5 built from a config.

    Examples:
        >>> ModelArguments(model_name_or_path="google-t5/t5-small", use_peft=True).lora_r
        16
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "aliases": ["--model"],
            "help": "Student to start from: a Hub name (e.g. google-t5/t5-small, Qwen/Qwen2.5-0.5B) or a local "
            "folder, seq2seq or decoder-only (its config says which). Without it, train and demo build a small "
            "model from a config (a T5, or a Llama with --student-type causal; the --tiny-* options size it) with "
            "a word-level tokenizer over the training texts.",
        },
    )
    student_type: str | None = field(
        default=None,
        metadata={"help": "seq2seq (encoder-decoder) or causal (decoder-only): the kind of the built-in small "
                  "student when --model is not given (a T5, or a Llama); with --model the model's config decides "
                  "and this, when given, must agree.", "choices": list(STUDENT_TYPES)},
    )  # fmt: skip
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use, when it differs from --model."}
    )
    use_peft: bool = field(
        default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names to adapt, space- or comma-separated, or all-linear (default: peft's choice "
            "for the architecture, q and v for T5)."
        },
    )
    tiny_d_model: int = field(
        default=64, metadata={"help": "Hidden size of the built-in small T5 or Llama (no --model)."}
    )
    tiny_num_layers: int = field(
        default=2,
        metadata={"help": "Encoder and decoder layers of the built-in T5 (decoder layers of the Llama)."},
    )
    tiny_num_heads: int = field(default=4, metadata={"help": "Attention heads of the built-in model."})
    tiny_d_ff: int = field(default=128, metadata={"help": "Feed-forward size of the built-in model."})

    def __post_init__(self) -> None:
        if self.student_type is not None and self.student_type not in STUDENT_TYPES:
            raise CLIUsageError(
                f"student_type={self.student_type!r} is not supported; expected one of {', '.join(STUDENT_TYPES)}"
            )


SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
"""The split names ``--train-split``, ``--eval-split`` and ``--test-split`` choose from (a DSS dataset's
files, your ``--train-file`` / ``--validation-file`` / ``--test-file``, the synthetic task's splits).

Examples:
    >>> "validation" in SPLIT_NAMES
    False
"""


@dataclass
class DataArguments:
    """Which data to train and evaluate on, and how to tokenise it.

    Either ``dataset`` (``synthetic`` or a Distilling Step-by-Step dataset with ``data_dir``) or your own
    files (``train_file`` / ``validation_file`` / ``test_file`` with ``input``, ``label``, ``rationale``
    columns, renamed with the ``*_column`` options).

    Examples:
        >>> DataArguments(dataset="svamp", data_dir="datasets").eval_split
        'valid'
    """

    dataset: str | None = field(
        default=None,
        metadata={
            "help": f"A built-in task: {', '.join(TASKS)} (synthetic is generated arithmetic; the others are "
            "the Distilling Step-by-Step release, read from --data-dir)."
        },  # fmt: skip
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the Distilling Step-by-Step release (holding svamp/, cqa/, ...)."},
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Your training data (.jsonl, .json, .csv, .parquet)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Your validation data."})
    test_file: str | None = field(default=None, metadata={"help": "Your test data."})
    input_column: str = field(default="input", metadata={"help": "Input column of your files."})
    label_column: str = field(default="label", metadata={"help": "Label column of your files."})
    rationale_column: str = field(default="rationale", metadata={"help": "Rationale column of your files."})
    train_split: str = field(
        default="train",
        metadata={"help": "Split to train on (esnli has no train: use valid).", "choices": list(SPLIT_NAMES)},
    )
    eval_split: str = field(
        default="valid",
        metadata={
            "help": "Split evaluated during training (with --eval-strategy).",
            "choices": list(SPLIT_NAMES),
        },
    )
    test_split: str = field(
        default="test", metadata={"help": "Split evaluated after training.", "choices": list(SPLIT_NAMES)}
    )
    label_source: str = field(
        default="gt",
        metadata={"help": "Train on ground-truth labels (gt) or the teacher's labels (llm): a DSS dataset's PaLM "
                  "labels, or the teacher_label column (llm_label also read) of your --train-file, as "
                  "hf-cotmi generate-rationales writes it. Held-out splits keep their gold labels.",
                  "choices": ["gt", "llm"]},
    )  # fmt: skip
    task: str | None = field(
        default=None,
        metadata={"help": "How answers are compared: text (exact match) or equation (arithmetic value). "
                  "Default: the task's (equation for svamp, text otherwise).", "choices": list(METRICS)},
    )  # fmt: skip
    max_input_length: int = field(
        default=512,
        metadata={"help": "Token limit of the prefixed inputs (evaluate: default the training run's)."},
    )
    max_label_length: int = field(default=64, metadata={"help": "Token limit of labels."})
    max_rationale_length: int = field(default=256, metadata={"help": "Token limit of rationales."})
    empty_rationale: str = field(
        default="keep",
        metadata={"help": "Training examples without a rationale: keep (the rationale target is only the "
                  "end-of-sequence token, as in DSS; counted), drop (removed; counted) or error (stop). "
                  "Held-out splits keep theirs.", "choices": ["keep", "drop", "error"]},
    )  # fmt: skip
    chat_template: bool = field(
        default=False,
        metadata={"help": "Decoder-only students: render each task as a user turn and the target as the "
                  "assistant turn with the tokenizer's chat template (saved with the run; evaluate and "
                  "predict reuse it)."},
    )  # fmt: skip
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use only the first N training examples (all, with a warning, if fewer)."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Use only the first N evaluation examples (all, with a warning, if fewer)."},
    )
    max_test_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N test examples (all, with a warning, if fewer)."}
    )
    synthetic_train_size: int = field(default=4000, metadata={"help": "Synthetic task: training examples."})
    synthetic_valid_size: int = field(default=0, metadata={"help": "Synthetic task: validation examples."})
    synthetic_test_size: int = field(default=200, metadata={"help": "Synthetic task: test examples."})
    synthetic_steps: int = field(
        default=2, metadata={"help": "Synthetic task: gain/loss events per problem."}
    )
    synthetic_max_number: int = field(
        default=9, metadata={"help": "Synthetic task: largest number in a problem."}
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic task: generator seed."})


COLUMN_FIELDS: tuple[str, ...] = ("input_column", "label_column", "rationale_column")
"""The :class:`DataArguments` fields that name the columns of your own files (a training run records them;
``evaluate`` reads new files with them)."""


@dataclass
class EvaluationArguments:
    """How accuracy and calibration are measured after training, and what is shown.

    Examples:
        >>> EvaluationArguments(confidence="candidates", label_candidates="entailment,neutral").n_bins
        10
    """

    confidence: str | None = field(
        default=None,
        metadata={"help": "Label confidence for the ECE: candidates, sequence or first_token. Default: "
                  "candidates for cqa (its choices) and esnli/anli1 (the three labels), sequence otherwise.",
                  "choices": list(CONFIDENCE_MODES)},
    )  # fmt: skip
    label_candidates: str | None = field(
        default=None,
        metadata={"help": "Candidates mode: comma-separated labels, or the name of a column holding each "
                  "example's candidates (e.g. choices)."},
    )  # fmt: skip
    n_bins: int = field(default=10, metadata={"help": "Bins of the expected calibration error."})
    num_examples_to_show: int = field(
        default=3, metadata={"help": "Test examples printed with their generated rationale and label."}
    )
