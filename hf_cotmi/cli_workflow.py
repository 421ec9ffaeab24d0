"""The work behind ``hf-cotmi train``, ``evaluate``, ``predict`` and ``demo``, usable from Python too.

:mod:`hf_cotmi.cli` parses the command line into the dataclasses defined here (plus
:class:`~hf_cotmi.DSSMITrainingArguments`) and calls :func:`run_training`, :func:`run_evaluation` or
:func:`run_prediction`. Everything is offline unless a model name or ``--push-to-hub`` asks for the Hub.

Examples:
    >>> from hf_cotmi.cli_workflow import DataArguments, load_task_data
    >>> data = load_task_data(DataArguments(dataset="synthetic", synthetic_train_size=8, synthetic_test_size=4))
    >>> data.splits["train"].num_rows, data.task
    (8, 'text')
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX

logger = logging.getLogger("hf_cotmi")

__all__ = [
    "SIDECAR_NAME",
    "SYNTHETIC_DATASET",
    "KNOWN_DATASETS",
    "ModelArguments",
    "DataArguments",
    "EvaluationArguments",
    "LoadedData",
    "CLIUsageError",
    "load_task_data",
    "load_student",
    "load_saved_student",
    "correctness_function",
    "default_confidence",
    "generate_texts",
    "predict_texts",
    "run_training",
    "run_evaluation",
    "run_prediction",
    "read_sidecar",
    "quiet_libraries",
]

SIDECAR_NAME = "hf_cotmi_config.json"
"""File written next to a trained student: prefixes, task and data source, read back by evaluate/predict."""

SYNTHETIC_DATASET = "synthetic"
"""``--dataset`` name of the generated arithmetic task (:mod:`hf_cotmi.data.synthetic`)."""

KNOWN_DATASETS: tuple[str, ...] = (SYNTHETIC_DATASET, "svamp", "cqa", "esnli", "anli1")
"""Dataset names ``--dataset`` accepts: the synthetic task and the Distilling Step-by-Step release."""

_NLI = ("esnli", "anli1")
_CONFIDENCE_MODES = ("candidates", "sequence", "first_token")


class CLIUsageError(ValueError):
    """A mistake in the command line or configuration; the CLI prints its message as one line.

    Examples:
        >>> str(CLIUsageError("--data-dir is needed"))
        '--data-dir is needed'
    """


# --------------------------------------------------------------------------------------------- arguments


@dataclass
class ModelArguments:
    """Which student to train: a Hub name or local path, or (demo) a small T5 built from a config.

    Examples:
        >>> ModelArguments(model_name_or_path="google-t5/t5-small", use_peft=True).lora_r
        16
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "aliases": ["--model"],
            "help": "Seq2seq student to start from: a Hub name (e.g. google-t5/t5-small) or a local folder. "
            "The demo builds a small T5 from a config when it is not given.",
        },
    )
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
            "help": "Module names to adapt (default: peft's choice for the architecture, q and v for T5)."
        },
    )
    tiny_d_model: int = field(
        default=64, metadata={"help": "Hidden size of the built-in small T5 (no --model)."}
    )
    tiny_num_layers: int = field(
        default=2, metadata={"help": "Encoder and decoder layers of the built-in T5."}
    )
    tiny_num_heads: int = field(default=4, metadata={"help": "Attention heads of the built-in T5."})
    tiny_d_ff: int = field(default=128, metadata={"help": "Feed-forward size of the built-in T5."})


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
            "help": "A built-in dataset: synthetic (generated arithmetic) or svamp, cqa, esnli, anli1 "
            "(the Distilling Step-by-Step release, with --data-dir)."
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
        default="train", metadata={"help": "Split to train on (esnli has no train: use valid)."}
    )
    eval_split: str = field(
        default="valid", metadata={"help": "Split evaluated during training (with --eval-strategy)."}
    )
    test_split: str = field(default="test", metadata={"help": "Split evaluated after training."})
    label_source: str = field(
        default="gt",
        metadata={"help": "DSS datasets: train on ground-truth labels (gt) or the teacher's labels (llm).",
                  "choices": ["gt", "llm"]},
    )  # fmt: skip
    task: str | None = field(
        default=None,
        metadata={"help": "How answers are compared: text (exact match) or equation (arithmetic value). "
                  "Default: equation for svamp, text otherwise.", "choices": ["text", "equation"]},
    )  # fmt: skip
    max_input_length: int = field(default=512, metadata={"help": "Token limit of the prefixed inputs."})
    max_label_length: int = field(default=64, metadata={"help": "Token limit of labels."})
    max_rationale_length: int = field(default=256, metadata={"help": "Token limit of rationales."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N evaluation examples."}
    )
    max_test_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N test examples."}
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
                  "choices": list(_CONFIDENCE_MODES)},
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


@contextlib.contextmanager
def quiet_libraries(enabled: bool = True) -> Iterator[None]:
    """Silence transformers/datasets warnings and progress bars (and ``hf_cotmi`` warnings) for a while.

    Everything is restored on exit, so calling code and other tests are not affected.

    Examples:
        >>> with quiet_libraries():
        ...     pass
    """
    if not enabled:
        yield
        return
    import datasets
    import transformers

    hf_logger = logging.getLogger("hf_cotmi")
    saved = (
        transformers.logging.get_verbosity(),
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.utils.logging.is_progress_bar_enabled(),
        hf_logger.level,
    )
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    hf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        verbosity, transformers_bars, datasets_bars, level = saved
        transformers.logging.set_verbosity(verbosity)
        if transformers_bars:
            transformers.utils.logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()
        hf_logger.setLevel(level)


# ------------------------------------------------------------------------------------------------- data


@dataclass
class LoadedData:
    """Text splits ready to tokenise, with what the model card and evaluate/predict need to know.

    Attributes:
        splits: ``"train"``, ``"eval"``, ``"test"`` -> ``datasets.Dataset`` with ``input``, ``label``,
            ``rationale`` (a split is absent when the source has none).
        name: dataset name for the model card (``None`` for your own files).
        task: ``"text"`` or ``"equation"``.
        source: how to load the same data again (written to the sidecar file).

    Examples:
        >>> LoadedData(splits={}, name=None, task="text", source={}).task
        'text'
    """

    splits: dict[str, Any]
    name: str | None
    task: str
    source: dict[str, Any]


def _limit(dataset: Any, limit: int | None, option: str) -> Any:
    if limit is None:
        return dataset
    if limit < 1:
        raise CLIUsageError(f"{option} must be at least 1; got {limit}")
    return dataset.select(range(min(limit, dataset.num_rows)))


def load_task_data(args: DataArguments, *, need_train: bool = True) -> LoadedData:
    """Load the data ``args`` names and pick the train, eval and test splits.

    Args:
        args: the data arguments.
        need_train: raise when there is no training split (False for ``evaluate``).

    Returns:
        A :class:`LoadedData`.

    Raises:
        CLIUsageError: no data named, both a dataset and files, an unknown dataset, ``--data-dir`` missing,
            or a split that is not there.
        FileNotFoundError: a file or folder that does not exist.

    Examples:
        >>> data = load_task_data(DataArguments(dataset="synthetic", synthetic_train_size=4, synthetic_test_size=2))
        >>> sorted(data.splits)
        ['test', 'train']
    """
    files = {"train": args.train_file, "valid": args.validation_file, "test": args.test_file}
    files = {split: path for split, path in files.items() if path}
    if files and args.dataset:
        raise CLIUsageError(
            f"give either --dataset ({args.dataset}) or your own files (--train-file, --validation-file, "
            "--test-file), not both"
        )
    if files:
        from .data.custom import load_cot_dataset

        for split, path in files.items():
            if not os.path.isfile(path):
                option = {"train": "--train-file", "valid": "--validation-file", "test": "--test-file"}[split]
                raise FileNotFoundError(f"{option} {path!r} does not exist or is not a file")
        data = load_cot_dataset(
            files,
            input_column=args.input_column,
            label_column=args.label_column,
            rationale_column=args.rationale_column,
        )
        name, task = None, args.task or "text"
        source: dict[str, Any] = {
            f"{split if split != 'valid' else 'validation'}_file": os.path.abspath(path)
            for split, path in files.items()
        }
        source.update(
            input_column=args.input_column,
            label_column=args.label_column,
            rationale_column=args.rationale_column,
        )
    elif args.dataset == SYNTHETIC_DATASET:
        from .data.synthetic import make_arithmetic_cot_dataset

        data = make_arithmetic_cot_dataset(
            args.synthetic_train_size,
            args.synthetic_test_size,
            n_valid=args.synthetic_valid_size,
            seed=args.synthetic_seed,
            min_steps=args.synthetic_steps,
            max_steps=args.synthetic_steps,
            max_number=args.synthetic_max_number,
        )
        name, task = "synthetic-arithmetic-cot", args.task or "text"
        source = {
            "dataset": SYNTHETIC_DATASET,
            **{k: v for k, v in asdict(args).items() if k.startswith("synthetic_")},
        }
    elif args.dataset:
        from .data.dss import DSS_DATASETS, load_dss_dataset

        if args.dataset not in DSS_DATASETS:
            raise CLIUsageError(
                f"unknown dataset {args.dataset!r}; expected one of {', '.join(KNOWN_DATASETS)}, "
                "or your own data with --train-file/--test-file"
            )
        if not args.data_dir:
            raise CLIUsageError(
                f"--dataset {args.dataset} needs --data-dir: the Distilling Step-by-Step release folder "
                f"holding {args.dataset}/"
            )
        data = load_dss_dataset(args.dataset, args.data_dir, label_source=args.label_source)
        name, task = args.dataset, args.task or DSS_DATASETS[args.dataset].task
        source = {"dataset": args.dataset, "data_dir": os.path.abspath(args.data_dir)}
    else:
        raise CLIUsageError(
            "no data given: use --dataset NAME (synthetic, or svamp/cqa/esnli/anli1 with --data-dir DIR) "
            "or --train-file/--test-file"
        )

    available = list(data)
    splits: dict[str, Any] = {}
    if args.train_split in data:
        splits["train"] = _limit(data[args.train_split], args.max_train_samples, "--max-train-samples")
    elif need_train:
        raise CLIUsageError(
            f"no training split {args.train_split!r}: the data has {available}; pick one with --train-split"
        )
    if args.eval_split in data and args.eval_split != args.train_split:
        splits["eval"] = _limit(data[args.eval_split], args.max_eval_samples, "--max-eval-samples")
    if args.test_split in data and args.test_split != args.train_split:
        splits["test"] = _limit(data[args.test_split], args.max_test_samples, "--max-test-samples")
    return LoadedData(splits=splits, name=name, task=task, source=source)


def correctness_function(task: str) -> Callable[[str, str], bool]:
    """``is_correct(prediction, gold)`` matching the accuracy metric of ``task``.

    Examples:
        >>> correctness_function("equation")("(84 / 2)", "( 42.0 * 1.0 )")
        True
        >>> correctness_function("text")("Neutral.", "neutral")
        True
    """
    from .metrics import equation_accuracy, text_accuracy

    if task not in ("text", "equation"):
        raise CLIUsageError(f"task {task!r} is not supported; expected text or equation")
    score = equation_accuracy if task == "equation" else text_accuracy

    def is_correct(prediction: str, gold: str) -> bool:
        return score([prediction], [gold]) == 1.0

    return is_correct


def default_confidence(
    dataset: str | None, mode: str | None, candidates: str | None, columns: Sequence[str] = ()
) -> tuple[str, list[str] | str | None]:
    """Resolve the confidence mode and label candidates from the options and the dataset.

    Args:
        dataset: ``--dataset`` (None for your own files).
        mode: ``--confidence`` (None: the dataset's default).
        candidates: ``--label-candidates`` (comma-separated labels or a column name).
        columns: the evaluation data's columns (to recognise a column name).

    Returns:
        ``(mode, candidates)`` for :func:`hf_cotmi.label_confidences`.

    Examples:
        >>> default_confidence("esnli", None, None)
        ('candidates', ['entailment', 'neutral', 'contradiction'])
        >>> default_confidence("cqa", None, None, ["input", "choices"])
        ('candidates', 'choices')
        >>> default_confidence(None, None, "yes,no")
        ('candidates', ['yes', 'no'])
    """
    resolved: list[str] | str | None = None
    if candidates:
        if candidates in columns:
            resolved = candidates
        else:
            resolved = [c.strip() for c in candidates.split(",") if c.strip()]
            if not resolved:
                raise CLIUsageError(f"--label-candidates {candidates!r} names no label")
    elif mode in (None, "candidates"):
        if dataset in _NLI:
            resolved = ["entailment", "neutral", "contradiction"]
        elif dataset == "cqa" and "choices" in columns:
            resolved = "choices"
    if mode is None:
        mode = "candidates" if resolved is not None else "sequence"
    if mode not in _CONFIDENCE_MODES:
        raise CLIUsageError(
            f"--confidence {mode!r} is not supported; expected one of {', '.join(_CONFIDENCE_MODES)}"
        )
    if mode == "candidates" and resolved is None:
        raise CLIUsageError("--confidence candidates needs --label-candidates (labels or a column name)")
    return mode, (resolved if mode == "candidates" else None)


# ----------------------------------------------------------------------------------------------- models


def _load_error(what: str, name: str, error: Exception) -> CLIUsageError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = (
        "the folder exists but holds no loadable model"
        if os.path.isdir(name)
        else "it is not a local folder, and the Hugging Face Hub could not provide it (offline, or no such repo)"
    )
    return CLIUsageError(f"could not load the {what} {name!r}: {where} ({first})")


def load_student(
    args: ModelArguments, texts: Sequence[str] = (), *, extra_vocabulary: Sequence[str] = ()
) -> tuple[Any, Any, str]:
    """Load the student named by ``args``, or build the small T5 and a word-level tokenizer from ``texts``.

    Args:
        args: the model arguments.
        texts: training texts the built-in tokenizer's vocabulary is taken from (no ``--model``).
        extra_vocabulary: more texts for that vocabulary (e.g. every number the task can produce).

    Returns:
        ``(model, tokenizer, description)``.

    Raises:
        CLIUsageError: the model or tokenizer cannot be loaded.

    Examples:
        >>> model, tok, text = load_student(ModelArguments(tiny_d_model=16), ["tom has 3 apples"])
        >>> text.startswith("T5 built from a config")
        True
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if args.model_name_or_path:
        name = args.model_name_or_path
        tokenizer_name = args.tokenizer_name_or_path or name
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
        except (OSError, ValueError) as error:
            raise _load_error("tokenizer", tokenizer_name, error) from error
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise _load_error("model", name, error) from error
        count = sum(p.numel() for p in model.parameters())
        return model, tokenizer, f"{name} ({type(model).__name__}, {count:,} parameters)"
    from .tiny import build_tiny_seq2seq, build_word_tokenizer

    tokenizer = build_word_tokenizer(list(extra_vocabulary) + list(texts), max_vocab_size=16000)
    model = build_tiny_seq2seq(
        tokenizer,
        "t5",
        d_model=args.tiny_d_model,
        num_layers=args.tiny_num_layers,
        num_heads=args.tiny_num_heads,
        d_ff=args.tiny_d_ff,
    )
    count = sum(p.numel() for p in model.parameters())
    return (
        model,
        tokenizer,
        f"T5 built from a config ({count:,} parameters, d_model {args.tiny_d_model}, "
        f"{args.tiny_num_layers}+{args.tiny_num_layers} layers) with a word-level tokenizer of {len(tokenizer)} tokens",
    )


def load_saved_student(path: str, device: str | None = None) -> tuple[Any, Any]:
    """Load a trained student (full weights or LoRA adapters) and its tokenizer for inference.

    Adapters (a folder with ``adapter_config.json``) are loaded onto their base model with peft and
    merged. The model is put in eval mode on ``device`` (default: CUDA when available, else CPU).

    Examples:
        >>> # model, tokenizer = load_saved_student("demo-out")
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if os.path.isfile(path):
        raise CLIUsageError(
            f"--model {path!r} is a file; expected the folder a training run saved, or a Hub name"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise _load_error("tokenizer", path, error) from error
    try:
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            try:
                from peft import AutoPeftModelForSeq2SeqLM
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise CLIUsageError(
                    f"{path!r} holds LoRA adapters; loading them needs peft: pip install 'hf-cotmi[peft]'"
                ) from error
            model = AutoPeftModelForSeq2SeqLM.from_pretrained(path).merge_and_unload()
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise _load_error("model", path, error) from error
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model, tokenizer


def read_sidecar(path: str) -> dict[str, Any]:
    """Read the ``hf_cotmi_config.json`` a training run wrote into ``path`` (``{}`` when there is none).

    Examples:
        >>> read_sidecar("/nonexistent")
        {}
    """
    file = os.path.join(path, SIDECAR_NAME)
    if not os.path.isfile(file):
        return {}
    with open(file, encoding="utf-8") as handle:
        value = json.load(handle)
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------------- generation


def generate_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    prefix: str,
    max_new_tokens: int,
    batch_size: int = 16,
    max_input_length: int | None = None,
) -> list[str]:
    """Greedy generation from ``prefix + text`` for each text, decoded without special tokens.

    Examples:
        >>> # generate_texts(model, tok, ["tom has 3 apples ..."], prefix=EXPLAIN_PREFIX, max_new_tokens=64)
    """
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = [prefix + text for text in texts[start : start + batch_size]]
            encoded = tokenizer(
                chunk,
                return_tensors="pt",
                padding=True,
                truncation=max_input_length is not None,
                max_length=max_input_length,
            )
            encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                ids = model.generate(**encoded, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
            outputs += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return outputs


def predict_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    predict_prefix: str = PREDICT_PREFIX,
    explain_prefix: str = EXPLAIN_PREFIX,
    label_max_new_tokens: int = 64,
    rationale_max_new_tokens: int = 256,
    confidence: str = "sequence",
    label_candidates: Sequence[str] | None = None,
    batch_size: int = 16,
    max_input_length: int | None = None,
) -> list[dict[str, Any]]:
    """Label, confidence and rationale of a distilled student for each text.

    The label comes from the ``predict:`` task (generated, or the best candidate in candidates mode), its
    confidence from :func:`hf_cotmi.label_confidences`, the rationale from greedy generation on the
    ``explain:`` task.

    Returns:
        ``[{"input", "label", "confidence", "rationale"}, ...]``.

    Examples:
        >>> # predict_texts(model, tok, ["tom has 3 apples . tom buys 4 more . how many ..."])
        >>> # [{'input': '...', 'label': '7', 'confidence': 0.93, 'rationale': '3 + 4 = 7 . ...'}]
    """
    from .confidence import label_confidences

    if not texts:
        return []
    mode = "candidates" if label_candidates else confidence
    result = label_confidences(
        model,
        tokenizer,
        {"input": list(texts), "label": [""] * len(texts)},
        mode=mode,  # type: ignore[arg-type]
        label_candidates=list(label_candidates) if label_candidates else None,
        prefix=predict_prefix,
        batch_size=batch_size,
        max_new_tokens=label_max_new_tokens if mode != "candidates" else None,
        max_source_length=max_input_length,
    )
    rationales = generate_texts(
        model,
        tokenizer,
        texts,
        prefix=explain_prefix,
        max_new_tokens=rationale_max_new_tokens,
        batch_size=batch_size,
        max_input_length=max_input_length,
    )
    return [
        {"input": text, "label": label, "confidence": float(conf), "rationale": rationale}
        for text, label, conf, rationale in zip(texts, result.predictions, result.confidences, rationales)
    ]


# -------------------------------------------------------------------------------------------- training


def _progress_callback(print_fn: Callable[[str], None]) -> Any:
    from transformers import TrainerCallback

    class ProgressPrinter(TrainerCallback):
        """One line per logging step: step, loss and its components, elapsed time."""

        def __init__(self) -> None:
            self.start = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.monotonic()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            logs = logs or {}
            elapsed = time.monotonic() - self.start
            width = len(str(state.max_steps))
            if "loss" in logs:
                parts = [f"step {state.global_step:>{width}}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
                for key, name in (
                    ("loss_label", "label"),
                    ("loss_rationale", "rationale"),
                    ("loss_mi", "mi"),
                ):
                    if key in logs:
                        parts.append(f"{name} {logs[key]:.4f}")
                parts.append(f"{elapsed:.0f}s")
                print_fn("  " + "  ".join(parts))
            elif any(key.startswith("eval_") for key in logs):
                shown = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, float)}
                shown = {k: v for k, v in shown.items() if not k.endswith(("_runtime", "_per_second"))}
                text = "  ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(shown.items()))
                print_fn(f"  eval at step {state.global_step}: {text}")

    return ProgressPrinter()


def _peft_config(args: ModelArguments) -> Any:
    try:
        from peft import LoraConfig, TaskType
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise CLIUsageError("--use-peft needs the peft package: pip install 'hf-cotmi[peft]'") from error
    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
    )


def _features(
    data: LoadedData, tokenizer: Any, data_args: DataArguments, training_args: Any
) -> dict[str, Any]:
    from .data.features import prepare_dss_features

    return {
        split: prepare_dss_features(
            dataset,
            tokenizer,
            max_input_length=data_args.max_input_length,
            max_label_length=data_args.max_label_length,
            max_rationale_length=data_args.max_rationale_length,
            predict_prefix=training_args.predict_prefix,
            explain_prefix=training_args.explain_prefix,
        )
        for split, dataset in data.splits.items()
    }


def _majority_baseline(train: Any, test: Any, is_correct: Callable[[str, str], bool]) -> float:
    if train is None or test is None or test.num_rows == 0 or train.num_rows == 0:
        return float("nan")
    majority = Counter(train["label"]).most_common(1)[0][0]
    return sum(is_correct(majority, gold) for gold in test["label"]) / test.num_rows


def _write_sidecar(output_dir: str, values: dict[str, Any]) -> str:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, SIDECAR_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def _silent(text: str) -> None:
    """A print function that prints nothing (processes other than the first)."""


def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    eval_args: EvaluationArguments,
    training_args: Any,
    *,
    title: str | None = None,
    extra_vocabulary: Sequence[str] = (),
    print_fn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a student with DSS + MI, evaluate accuracy and calibration, show examples, save everything.

    Steps: load the data and the student, tokenise both tasks, train with :class:`~hf_cotmi.DSSMITrainer`
    (LoRA with ``use_peft``), evaluate the test split (accuracy, ECE, average confidence through
    :class:`~hf_cotmi.ECECallback`), print a few test inputs with their generated rationale and label, then
    save the model, tokenizer, model card (``README.md``), reliability diagram, ``results.json`` and
    ``hf_cotmi_config.json`` to ``output_dir``; with ``push_to_hub`` upload the folder to the Hub.

    Args:
        model_args: the student.
        data_args: the data.
        eval_args: calibration and display options.
        training_args: a :class:`~hf_cotmi.DSSMITrainingArguments`.
        title: first line printed.
        extra_vocabulary: texts added to the built-in tokenizer's vocabulary.
        print_fn: where progress goes.

    Returns:
        ``{"metrics", "majority_baseline", "examples", "output_dir", "files", "train_seconds",
        "total_seconds", ...}``.

    Examples:
        >>> # from hf_cotmi import DSSMITrainingArguments
        >>> # run_training(ModelArguments(), DataArguments(dataset="synthetic"), EvaluationArguments(),
        >>> #              DSSMITrainingArguments("out", max_steps=200))
    """
    from . import __version__
    from .callbacks import ECECallback
    from .metrics import build_compute_metrics
    from .trainer import DSSMITrainer

    started = time.monotonic()
    if training_args.process_index != 0:  # one process reports (multi-GPU runs)
        print_fn = _silent
    if title:
        print_fn(title)
    data = load_task_data(data_args)
    train_split = data.splits["train"]
    sizes = ", ".join(f"{split} {dataset.num_rows}" for split, dataset in data.splits.items())
    print_fn(f"data: {data.name or 'your files'} ({sizes} examples; answers compared as {data.task})")

    texts = [
        t for row in train_split.select_columns(["input", "label", "rationale"]) for t in row.values() if t
    ]
    model, tokenizer, description = load_student(model_args, texts, extra_vocabulary=extra_vocabulary)
    print_fn(f"student: {description}" + (" + LoRA adapters" if model_args.use_peft else ""))
    features = _features(data, tokenizer, data_args, training_args)

    is_correct = correctness_function(data.task)
    evaluation = features.get("test", features.get("eval"))
    columns = evaluation.column_names if evaluation is not None else []
    mode, candidates = default_confidence(
        data.name, eval_args.confidence, eval_args.label_candidates, columns
    )
    ece = ECECallback(
        n_bins=eval_args.n_bins,
        confidence=mode,
        label_candidates=candidates,
        plot=False,
        is_correct=is_correct,
    )
    if training_args.generation_max_length is None:
        training_args.generation_max_length = data_args.max_label_length
    trainer = DSSMITrainer(
        model=model,
        args=training_args,
        train_dataset=features["train"],
        eval_dataset=features.get("eval") if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer, task=data.task),
        callbacks=[ece, _progress_callback(print_fn)],
        peft_config=_peft_config(model_args) if model_args.use_peft else None,
    )
    if training_args.disable_tqdm:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    settings = training_args.loss_settings()
    print_fn(
        f"training: {training_args.max_steps if training_args.max_steps > 0 else training_args.num_train_epochs} "
        f"{'steps' if training_args.max_steps > 0 else 'epochs'}, batch {training_args.per_device_train_batch_size}, "
        f"lr {training_args.learning_rate:g}; loss = {settings['label_loss_weight']:g} * label + "
        f"{settings['rationale_loss_weight']:g} * rationale + {settings['mi_loss_weight']:g} * MI "
        f"({settings['mi_variant']} variant, {settings['mi_reduction']}, {settings['mi_divergence']})"
    )
    train_started = time.monotonic()
    train_output = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.monotonic() - train_started
    trainer.save_metrics("train", train_output.metrics)

    metrics: dict[str, float] = {}
    prefix = "test" if "test" in features else "eval"
    baseline = float("nan")
    examples: list[dict[str, Any]] = []
    files: list[str] = []
    if evaluation is not None:
        print_fn(f"evaluating on {evaluation.num_rows} {prefix} examples ...")
        metrics = trainer.evaluate(evaluation, metric_key_prefix=prefix)
        trainer.save_metrics(prefix, metrics)
        baseline = _majority_baseline(data.splits["train"], data.splits.get(prefix), is_correct)
        accuracy = metrics.get(f"{prefix}_accuracy", float("nan"))
        print_fn(
            f"{prefix}: accuracy {_percent(accuracy)} (always answering the most frequent training label: "
            f"{_percent(baseline)}), ECE {metrics.get(f'{prefix}_ece', float('nan')):.3f}, "
            f"average confidence {metrics.get(f'{prefix}_avg_confidence', float('nan')):.3f} ({mode} confidence)"
        )
        result = ece.last_results.get(prefix)
        if result is not None and trainer.is_world_process_zero():
            from .plotting import matplotlib_available, save_reliability_diagram

            if matplotlib_available():
                files.append(
                    save_reliability_diagram(
                        result.confidences,
                        result.correct,
                        os.path.join(training_args.output_dir, "reliability_diagram.png"),
                        n_bins=eval_args.n_bins,
                        title=f"{data.name or 'test'}: {mode} confidence",
                    )
                )
        shown = min(eval_args.num_examples_to_show, data.splits[prefix].num_rows)
        if shown > 0 and trainer.is_world_process_zero():
            raw = data.splits[prefix].select(range(shown))
            label_set = candidates if isinstance(candidates, list) else None
            rows = predict_texts(
                trainer.model,
                tokenizer,
                raw["input"],
                predict_prefix=training_args.predict_prefix,
                explain_prefix=training_args.explain_prefix,
                label_max_new_tokens=training_args.generation_max_length,
                rationale_max_new_tokens=training_args.rationale_max_new_tokens,
                confidence="sequence" if mode == "candidates" and label_set is None else mode,
                label_candidates=label_set,
                max_input_length=data_args.max_input_length,
            )
            print_fn(f"{shown} {prefix} examples (generated rationale and label):")
            for row, gold in zip(rows, raw["label"]):
                row["gold"] = gold
                row["correct"] = bool(is_correct(row["label"], gold))
                examples.append(row)
                mark = "right" if row["correct"] else "wrong"
                print_fn(f"  input:     {row['input']}")
                print_fn(f"  rationale: {row['rationale']}")
                print_fn(
                    f"  label:     {row['label']}  (gold {gold}, {mark}, confidence {row['confidence']:.2f})"
                )

    output_dir = training_args.output_dir
    sidecar = {
        "hf_cotmi_version": __version__,
        "task": data.task,
        "dataset": data.name,
        "data": data.source,
        "predict_prefix": training_args.predict_prefix,
        "explain_prefix": training_args.explain_prefix,
        "max_input_length": data_args.max_input_length,
        "generation_max_length": training_args.generation_max_length,
        "rationale_max_new_tokens": training_args.rationale_max_new_tokens,
        "confidence": mode,
        "label_candidates": candidates,
        "base_model": model_args.model_name_or_path,
        "peft": model_args.use_peft,
    }
    results = {
        "metrics": metrics,
        "majority_baseline": baseline,
        "examples": examples,
        "output_dir": output_dir,
        "train_seconds": round(train_seconds, 1),
    }
    if trainer.is_world_process_zero():
        files.append(_write_sidecar(output_dir, sidecar))
        results["total_seconds"] = round(time.monotonic() - started, 1)
        path = os.path.join(output_dir, "results.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, default=float)
            handle.write("\n")
        files.append(path)
    card_kwargs: dict[str, Any] = {"dataset": data.name} if data.name else {}
    if training_args.push_to_hub:
        print_fn(f"pushing {output_dir} to the Hub as {trainer.hub_model_id} ...")
        # the full repo id as model name: the card's usage snippet loads from it
        trainer.push_to_hub(model_name=trainer.hub_model_id, **card_kwargs)
    else:
        trainer.save_model()
        trainer.create_model_card(**card_kwargs)
    results["files"] = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    results["trainer"] = trainer
    print_fn(f"saved model, tokenizer, model card (README.md) and results to {output_dir}/")
    return results


# ------------------------------------------------------------------------------------ evaluate / predict


def run_evaluation(
    model_path: str,
    data_args: DataArguments,
    eval_args: EvaluationArguments,
    *,
    split: str = "test",
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    plot_file: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Accuracy, ECE and average confidence of a saved student on one split.

    Settings the training run saved in ``hf_cotmi_config.json`` (prefixes, task, data source) are used
    where ``data_args`` leaves them open.

    Returns:
        :func:`hf_cotmi.evaluate_calibration`'s dict plus ``"split"``, ``"dataset"`` and ``"model"``.

    Examples:
        >>> # run_evaluation("demo-out", DataArguments(), EvaluationArguments())["accuracy"]
    """
    from .data.features import prepare_dss_features
    from .evaluation import evaluate_calibration

    sidecar = read_sidecar(model_path)
    no_data = not (
        data_args.dataset or data_args.train_file or data_args.validation_file or data_args.test_file
    )
    if no_data:
        source = sidecar.get("data") or {}
        if not source:
            raise CLIUsageError(
                f"no data given and {model_path!r} has no {SIDECAR_NAME} naming its data; use --dataset or "
                "--test-file"
            )
        values = {k: v for k, v in source.items() if k in DataArguments.__dataclass_fields__}
        data_args = DataArguments(**{**asdict(data_args), **values})
    wanted = "valid" if split == "validation" else split
    data = load_task_data(
        replace(data_args, train_split="", eval_split="", test_split=wanted), need_train=False
    )
    if "test" not in data.splits:
        raise CLIUsageError(f"the data has no {split!r} split; choose another with --split")
    task = data_args.task or (sidecar.get("task") if no_data else None) or data.task
    model, tokenizer = load_saved_student(model_path, device=device)
    predict_prefix = sidecar.get("predict_prefix", PREDICT_PREFIX)
    features = prepare_dss_features(
        data.splits["test"],
        tokenizer,
        max_input_length=int(sidecar.get("max_input_length", data_args.max_input_length)),
        max_label_length=data_args.max_label_length,
        predict_prefix=predict_prefix,
        with_rationale=False,
    )
    mode, candidates = default_confidence(
        data.name or sidecar.get("dataset"),
        eval_args.confidence,
        eval_args.label_candidates,
        features.column_names,
    )
    report = evaluate_calibration(
        model,
        tokenizer,
        features,
        confidence=mode,  # type: ignore[arg-type]
        label_candidates=candidates,
        n_bins=eval_args.n_bins,
        prefix=predict_prefix,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens
        or int(sidecar.get("generation_max_length") or data_args.max_label_length),
        is_correct=correctness_function(task),
        plot_path=plot_file,
    )
    report.update(split=split, dataset=data.name, model=model_path, task=task)
    return report


def run_prediction(
    model_path: str,
    texts: Sequence[str],
    *,
    label_candidates: str | None = None,
    confidence: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    rationale_max_new_tokens: int | None = None,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Label, confidence and rationale of a saved student for each text (see :func:`predict_texts`).

    Examples:
        >>> # run_prediction("demo-out", ["mia has 4 pens . mia buys 3 more . ..."])[0]["label"]
    """
    if not texts:
        raise CLIUsageError("no input text: give texts as arguments, or --input-file FILE")
    sidecar = read_sidecar(model_path)
    model, tokenizer = load_saved_student(model_path, device=device)
    candidates: list[str] | None = None
    if label_candidates:
        candidates = [c.strip() for c in label_candidates.split(",") if c.strip()]
    elif isinstance(sidecar.get("label_candidates"), list) and confidence in (None, "candidates"):
        candidates = [str(c) for c in sidecar["label_candidates"]]
    mode = confidence or ("candidates" if candidates else "sequence")
    if mode == "candidates" and not candidates:
        raise CLIUsageError("--confidence candidates needs --label-candidates (comma-separated labels)")
    return predict_texts(
        model,
        tokenizer,
        list(texts),
        predict_prefix=sidecar.get("predict_prefix", PREDICT_PREFIX),
        explain_prefix=sidecar.get("explain_prefix", EXPLAIN_PREFIX),
        label_max_new_tokens=max_new_tokens or int(sidecar.get("generation_max_length") or 64),
        rationale_max_new_tokens=rationale_max_new_tokens
        or int(sidecar.get("rationale_max_new_tokens") or 256),
        confidence=mode,
        label_candidates=candidates if mode == "candidates" else None,
        batch_size=batch_size,
        max_input_length=sidecar.get("max_input_length"),
    )
