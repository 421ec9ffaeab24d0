#!/usr/bin/env python3
"""Compare standard fine-tuning, the single-task baseline, DSS and DSS + MI on equal terms, over seeds.

For one dataset (a Distilling Step-by-Step release dataset, the synthetic task, or your own
chain-of-thought data) and one student (a Hub name or a local folder, seq2seq or decoder-only), this
trains the methods below with the same step budget, learning rate, batch size, evaluation schedule and
early-stopping rule, for N seeds each:

==================  ==========================================================================
``finetune``        label task only (``rationale_loss_weight=0, mi_loss_weight=0``)
``single_task``     one target holding rationale and label (``--single-task-order``); accuracy
                    from the label parsed out of the generation, confidence over its label slot
``dss``             Distilling Step-by-Step: 0.5 label + 0.5 rationale
``dss_mi_paper``    DSS + 0.1 MI loss, ``mi_variant="paper"`` (the released behaviour)
``dss_mi_masked``   DSS + 0.1 MI loss, ``mi_variant="masked"`` (padding excluded, one softmax)
``dss_mi_mean``     DSS + 0.1 MI loss, paper variant with ``mi_reduction="mean"``
``dss_mi_kl``       DSS + 0.1 MI loss, paper variant with ``mi_divergence="kl"``
==================  ==========================================================================

The first, third, fourth and fifth run by default; name others with ``--methods``. Each run evaluates on
the *validation* split every ``--eval-steps`` steps, keeps the checkpoint with the best validation
accuracy; with ``--patience N`` it stops early when validation accuracy has not improved for N
evaluations (off by default). Only then is the *test* split touched, once: generation accuracy against
the gold labels, the expected calibration error and average confidence (and, for multiple-choice tasks,
the choice-ranking accuracy). ``--label-source llm`` trains on the teacher's labels (test: always gold).
``--train-fractions`` repeats the sweep on nested subsets of the training set. The output folder gets
``results.json`` (every run, the per-method mean and sample std, the paired differences DSS + MI - DSS),
``results.md`` and ``accuracy.png`` (and ``accuracy_vs_size.png`` with fractions).

Everything that is not the benchmark's own (data loading, the task spec and its correctness, student
loading, tokenisation, the trainer, label confidences) comes from ``hf_cotmi``. Options are parsed with
``HfArgumentParser`` over the package's ``DataArguments``, ``EvaluationArguments`` and
``DSSMITrainingArguments`` (every Trainer knob is accepted: ``--optim``, ``--warmup-steps``, ...), plus
:class:`ReplicateArguments` for this script's own options.

Resumable: each run lives in ``OUT/runs/<method>/seed<k>/`` (``OUT/runs/frac<f>/<method>/seed<k>/`` with
fractions). A finished run has ``done.json`` and is skipped; an unfinished one continues from its last
checkpoint. A rerun with different settings that change the results is refused (``--force`` overrides).

Examples::

    python examples/benchmarks/replicate.py --dataset esnli --data-dir ../shared/data/dss \\
        --train-split valid --train-size 1500 --valid-size 200 --test-size 400 \\
        --student runs/student --max-steps 1200 --eval-steps 100 \\
        --seeds 0 1 2 --output-dir runs/esnli

    # a 30-second check that everything runs (tiny model, synthetic data); tiny-causal: a tiny Llama
    python examples/benchmarks/replicate.py --smoke --output-dir /tmp/replicate-smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the sibling modules: what is compared, how it is reported, how long it took
from stopped_time import StoppedTime  # noqa: E402
from sweep_methods import DEFAULT_METHODS, METHOD_NAMES, Method, build_methods  # noqa: E402
from sweep_report import (  # noqa: E402
    fraction_key,
    record_problem,
    run_name,
    same_student_weights,
    write_json,
    write_report,
)

logger = logging.getLogger("replicate")

TINY_STUDENT = "tiny"
TINY_CAUSAL_STUDENT = "tiny-causal"


# ----------------------------------------------------------------------------------------------- arguments


def default_seeds() -> list[int]:
    """The seeds a sweep runs when ``--seeds`` is not given.

    Examples:
        >>> default_seeds()
        [0, 1, 2]
    """
    (seeds,) = [f for f in fields(ReplicateArguments) if f.name == "seeds"]
    return list(seeds.default_factory())  # type: ignore[misc]


@dataclass
class ReplicateArguments:
    """The options of this script that the package's dataclasses do not have."""

    student: str | None = field(
        default=None,
        metadata={
            "help": "Hub name or local folder of a seq2seq or causal LM (detected from its config); "
            f"'{TINY_STUDENT}' builds a tiny T5, '{TINY_CAUSAL_STUDENT}' a tiny Llama"
        },
    )
    methods: list[str] | None = field(
        default=None,
        metadata={
            "help": f"methods to run (default: {' '.join(DEFAULT_METHODS)})",
            "choices": list(METHOD_NAMES),
        },
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "training seeds"})
    train_size: int | None = field(default=None, metadata={"help": "subsample the training set to this many"})
    valid_size: int | None = field(
        default=None, metadata={"help": "validation examples (carved or subsampled)"}
    )
    test_size: int | None = field(default=None, metadata={"help": "subsample the test set"})
    subsample_seed: int = field(
        default=0, metadata={"help": "seed of the subsampling, the same for all runs (alias --data-seed)"}
    )
    train_fractions: list[float] | None = field(
        default=None,
        metadata={
            "help": "run every method on these fractions of the training set (nested subsets, same step "
            "budget and evaluation schedule per size), e.g. 0.125 0.25 0.5 1.0"
        },
    )
    single_task_order: str = field(
        default="rationale_first",
        metadata={"help": "order of the single_task target", "choices": ["label_first", "rationale_first"]},
    )
    patience: int = field(
        default=0,
        metadata={
            "help": "stop a run after this many evaluations without a better validation accuracy (default 0: "
            "never; every run trains the full budget and keeps its best validation checkpoint)"
        },
    )
    patience_start: int = field(
        default=0,
        metadata={"help": "count evaluations towards --patience only from this step on"},
    )
    mi_weight: float = field(default=0.1, metadata={"help": "MI loss weight of the DSS + MI methods"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints of finished runs"})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads"})
    force: bool = field(default=False, metadata={"help": "reuse an output folder made with other settings"})
    report_only: bool = field(
        default=False,
        metadata={"help": "only aggregate the finished runs (or the runs in an existing results.json)"},
    )
    smoke: bool = field(
        default=False,
        metadata={"help": "tiny model and synthetic data (unless a dataset or files are given), tiny budget"},
    )


# the script's historical flag spellings -> the dataclass fields they now set
FLAG_ALIASES = {
    "--batch-size": "--per_device_train_batch_size",
    "--eval-batch-size": "--per_device_eval_batch_size",
    "--lr-scheduler": "--lr_scheduler_type",
    "--valid-file": "--validation_file",
    "--valid-split": "--eval_split",
    "--data-seed": "--subsample_seed",
}
# the script's defaults where they differ from the dataclasses'
DEFAULTS = {
    "max_steps": 1000,
    "eval_steps": 100,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "optim": "adamw_torch",
    "max_input_length": 128,
    "max_label_length": 16,
    "max_rationale_length": 64,
    "output_dir": None,
}
SMOKE = {"max_steps": 4, "eval_steps": 2, "seeds": [0], "train_size": 32, "valid_size": 8, "test_size": 8}
"""What ``--smoke`` sets, each option only when the command line does not type it (:func:`typed_options`)."""


@dataclass
class Options:
    """The parsed command line: the package's dataclasses and this script's own."""

    data: Any
    evaluation: Any
    training: Any
    run: ReplicateArguments

    @property
    def methods(self) -> list[str]:
        return list(self.run.methods or DEFAULT_METHODS)


def _rewrite_aliases(argv: Sequence[str]) -> list[str]:
    """Old flag spellings to the new ones; ``--label-candidates a b c`` (several labels) to ``a,b,c``."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        flag, _, value = items[i].partition("=")
        flag = FLAG_ALIASES.get(flag, flag)
        if flag == "--label-candidates" or flag == "--label_candidates":
            values = [value] if value else []
            while not value and i + 1 < len(items) and not items[i + 1].startswith("--"):
                i += 1
                values.append(items[i])
            out += [flag, ",".join(values)]
        else:
            out.append(f"{flag}={value}" if value else flag)
        i += 1
    return out


def _error(message: str) -> SystemExit:
    print(f"replicate.py: error: {message}", file=sys.stderr)
    return SystemExit(2)


def _argument_parser() -> Any:
    """The ``HfArgumentParser`` of this script: the package's dataclasses and its own, its defaults set."""
    from transformers import HfArgumentParser

    from hf_cotmi import DSSMITrainingArguments
    from hf_cotmi.run_arguments import DataArguments, EvaluationArguments

    parser = HfArgumentParser(
        [DataArguments, EvaluationArguments, DSSMITrainingArguments, ReplicateArguments],
        description=__doc__.split("\n\n")[0],
    )
    parser.set_defaults(**DEFAULTS)
    return parser


def typed_options(argv: Sequence[str]) -> set[str]:
    """The options (field names) that a command line types, whatever their value, a default one included.

    ``argv`` is parsed once more into a namespace where every option holds a marker instead of its default:
    the options no longer holding it were typed (in any spelling the parser takes: ``--max-steps 5``,
    ``--max_steps=5``, ``--no_...``).

    Example:
        >>> sorted(typed_options(["--smoke", "--max-steps", "1000", "--output-dir", "out"]))
        ['max_steps', 'output_dir', 'smoke']
    """
    parser = _argument_parser()
    names = {f.name for dataclass_type in parser.dataclass_types for f in fields(dataclass_type)}
    not_typed = object()
    namespace, _ = parser.parse_known_args(list(argv), argparse.Namespace(**dict.fromkeys(names, not_typed)))
    return {name for name, value in vars(namespace).items() if value is not not_typed}


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line (see the module docstring) into the package's and the script's dataclasses."""
    argv = _rewrite_aliases(sys.argv[1:] if argv is None else argv)
    if "--bf16" in argv and "--use_cpu" not in argv and "--use-cpu" not in argv:
        import torch

        if not torch.cuda.is_available():
            argv.append("--use_cpu")  # transformers refuses bf16 without an accelerator unless use_cpu is set
    data, evaluation, training, run = _argument_parser().parse_args_into_dataclasses(argv)
    # TrainingArguments puts a default in when none is given: the flag itself must be there
    if not any(a.split("=")[0] in ("--output_dir", "--output-dir") for a in argv) or not training.output_dir:
        raise _error("--output-dir is required (folder for runs, results.json, table and plot)")
    options = Options(data, evaluation, training, run)
    if run.report_only:
        return options
    if run.smoke:
        if run.student is None:
            run.student = TINY_STUDENT
        if data.dataset is None and data.train_file is None:
            data.dataset = "synthetic"
        # what the user typed stays, even where it is the default value (``--max-steps 1000``)
        typed = typed_options(argv)
        for key, value in SMOKE.items():
            if key not in typed:
                setattr(run if hasattr(run, key) else training, key, value)
    if run.student is None:
        raise _error(
            f"--student is required (a Hub name, a local folder, '{TINY_STUDENT}' or '{TINY_CAUSAL_STUDENT}')"
        )
    if (data.dataset is None) == (data.train_file is None):
        raise _error("give exactly one of --dataset (with --data-dir) and --train-file")
    if data.dataset not in (None, "synthetic") and data.data_dir is None:
        raise _error("--dataset needs --data-dir")
    if training.eval_steps is None or training.eval_steps < 1 or training.max_steps < 1:
        raise _error("--max-steps and --eval-steps must be positive")
    for fraction in run.train_fractions or []:
        if not 0 < fraction <= 1:
            raise _error(f"--train-fractions {fraction}: expected a fraction in (0, 1]")
    return options


# ----------------------------------------------------------------------------------------------------- data


def _subsample(dataset: Any, size: int | None, seed: int) -> Any:
    if size is None or size >= dataset.num_rows:
        return dataset
    return dataset.shuffle(seed=seed).select(range(size))


def use_teacher_labels(train: Any) -> tuple[Any, int]:
    """The training examples with the teacher's label (``llm_label``) as ``label``; and how many had none.

    Examples without a teacher label (its output did not parse) are left out of training, and counted.

    Example:
        >>> from datasets import Dataset
        >>> rows = Dataset.from_dict({"label": ["a", "b"], "llm_label": ["b", ""], "input": ["x", "y"]})
        >>> data, missing = use_teacher_labels(rows)
        >>> list(data["label"]), missing
        (['b'], 1)
    """
    if "llm_label" not in train.column_names:
        raise _error(
            "--label-source llm needs the teacher's labels (an llm_label column: the DSS release has one)"
        )
    kept = train.filter(lambda label: bool(label), input_columns="llm_label")
    missing = train.num_rows - kept.num_rows
    return kept.map(lambda label: {"label": label}, input_columns="llm_label"), missing


def select_splits(options: Options) -> tuple[Any, Any, dict[str, Any]]:
    """The benchmark's train / valid / test: the package's loader (:func:`hf_cotmi.pipeline.load_task_data`),
    then the protocol's selection: the validation set carved from training data when there is no separate
    one, subsampling with ``--data-seed``, and teacher labels on the training examples.

    Returns the splits, the task spec and a description of the data for the protocol.
    """
    from datasets import DatasetDict

    from hf_cotmi.pipeline import load_task_data

    data_args, run = options.data, options.run
    if data_args.dataset == "synthetic":
        data_args = replace(
            data_args,
            synthetic_train_size=max(run.train_size or 64, 8),
            synthetic_valid_size=max(run.valid_size or 16, 4),
            synthetic_test_size=max(run.test_size or 16, 4),
        )
    # teacher labels are applied below, to the training examples only: the e-SNLI release has no train
    # split (its valid split is the training data), and the loader's label_source acts on "train" only
    loaded = load_task_data(replace(data_args, label_source="gt"))
    splits = loaded.splits
    for role, name in (("train", data_args.train_split), ("test", data_args.test_split)):
        if role not in splits:
            raise _error(f"the {role} split {name!r} is not in the data")
    train = splits["train"]
    carve = "eval" not in splits
    if carve:
        # selection examples come from the training split, disjoint from the training examples
        n_valid = run.valid_size or max(1, round(0.1 * train.num_rows))
        if n_valid >= train.num_rows:
            raise _error(f"--valid-size {n_valid} leaves no training examples out of {train.num_rows}")
        shuffled = train.shuffle(seed=run.subsample_seed)
        valid = shuffled.select(range(n_valid))
        train = shuffled.select(range(n_valid, shuffled.num_rows))
    else:
        valid = _subsample(splits["eval"], run.valid_size, run.subsample_seed)
    train = _subsample(train, run.train_size, run.subsample_seed)
    test = _subsample(splits["test"], run.test_size, run.subsample_seed)
    description: dict[str, Any] = {
        "dataset": data_args.dataset or portable_path(data_args.train_file),
        "train": {"split": data_args.train_split, "examples": train.num_rows},
        "valid": {
            "split": f"carved from {data_args.train_split}" if carve else data_args.eval_split,
            "examples": valid.num_rows,
        },
        "test": {"split": data_args.test_split, "examples": test.num_rows},
        "data_seed": run.subsample_seed,
    }
    if data_args.label_source == "llm":
        train, missing = use_teacher_labels(train)
        description["train"]["examples"] = train.num_rows
        description["train"]["without_teacher_label"] = missing
        if missing:
            logger.warning("%d training examples have no teacher label and are left out", missing)
    return DatasetDict({"train": train, "valid": valid, "test": test}), loaded.spec, description


def fraction_of(train: Any, fraction: float | None) -> Any:
    """The first ``round(fraction * n)`` training examples (nested: a smaller fraction is a subset).

    Example:
        >>> from datasets import Dataset
        >>> list(fraction_of(Dataset.from_dict({"x": list(range(8))}), 0.25)["x"])
        [0, 1]
    """
    if fraction is None or fraction >= 1:
        return train
    return train.select(range(max(1, round(fraction * train.num_rows))))


# -------------------------------------------------------------------------------------------------- student


def _vocabulary(data: Any) -> list[str]:
    from hf_cotmi.data.parsing import ANSWER_MARKER, EXPLANATION_MARKER
    from hf_cotmi.data.synthetic import arithmetic_vocabulary

    texts = [ANSWER_MARKER, EXPLANATION_MARKER, " ".join(arithmetic_vocabulary())]
    for split in data.values():
        for column in ("input", "label", "rationale", "premise", "hypothesis"):
            if column in split.column_names:
                texts.extend(str(x) for x in split[column])
    return texts


def make_student(name: str, texts: Sequence[str], seed: int = 0) -> tuple[Any, Any]:
    """The student: :func:`hf_cotmi.students.load_student` (a folder or Hub name, seq2seq or causal, or the
    package's small T5 for ``tiny`` and small Llama for ``tiny-causal``, built from a config)."""
    from hf_cotmi.run_arguments import ModelArguments
    from hf_cotmi.students import load_student

    built_in = name in (TINY_STUDENT, TINY_CAUSAL_STUDENT)
    args = ModelArguments(
        model_name_or_path=None if built_in else name,
        student_type="causal" if name == TINY_CAUSAL_STUDENT else None,
        tiny_d_model=32,
    )
    model, tokenizer, _ = load_student(args, texts, seed=seed)
    return model, tokenizer


WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin")


def student_weights_sha256(name: str) -> str | None:
    """SHA-256 over a local student folder's weight files (names and bytes, sorted), else ``None``.

    Two builds of the same student script can differ (a newly initialised part drawn without a seed),
    and a folder rebuilt between two sittings of a resumed sweep would mix students under one name: each
    run records this fingerprint, and the report says when the runs do not share one. A Hub name or a
    built-in tiny student gives ``None`` (nothing local to hash).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.safetensors").write_bytes(b"weights")
        >>> student_weights_sha256(str(folder))[:12]
        '80179a942440'
        >>> student_weights_sha256("google/flan-t5-small") is None
        True
    """
    folder = Path(name)
    if not folder.is_dir():
        return None
    files = sorted({f for pattern in WEIGHT_FILE_PATTERNS for f in folder.glob(pattern) if f.is_file()})
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def is_causal(model: Any) -> bool:
    """Whether the student is decoder-only (:func:`hf_cotmi.resolve_student_type`)."""
    from hf_cotmi import resolve_student_type

    return resolve_student_type(model) == "causal"


def single_task_splits(data: Any, order: str) -> Any:
    """The training split with ``label`` replaced by the one rationale + label target; others unchanged."""
    from datasets import DatasetDict

    from hf_cotmi.data.parsing import single_task_target

    train = data["train"].map(
        lambda label, rationale: {"label": single_task_target(label, rationale, order)},
        input_columns=["label", "rationale"],
    )
    return DatasetDict({**data, "train": train})


def method_features(
    data: Any,
    tokenizer: Any,
    options: Options,
    *,
    model: Any = None,
    single_task: bool = False,
    return_report: bool = False,
) -> Any:
    """DSS features (:func:`hf_cotmi.pipeline.build_features`): train keeps the rationale task; valid and
    test hold the label task only. ``single_task``: the training target is rationale and label together.
    ``return_report``: also the loader's counts (a :class:`~hf_cotmi.data.report.FeaturesReport`), among
    them the training examples dropped for an empty rationale (``--empty-rationale drop``)."""
    from hf_cotmi.pipeline import LoadedData, build_features

    data_args = options.data
    if single_task:
        data = single_task_splits(data, options.run.single_task_order)
        data_args = replace(data_args, max_label_length=single_task_length(data_args))
    loaded = LoadedData(splits=dict(data), name=None, task="text", source={})
    return build_features(
        loaded,
        tokenizer,
        data_args,
        predict_prefix=options.training.predict_prefix,
        explain_prefix=options.training.explain_prefix,
        with_rationale={"train"} if not single_task else False,
        return_report=return_report,
        model=model if model is not None and is_causal(model) else None,
    )


SINGLE_TASK_CANDIDATES = "single_task_candidates"
"""Test column of the single-task method's candidate targets (one per candidate label, see below)."""


def single_task_candidate_targets(
    generations: Sequence[str], candidates: Sequence[str] | str, raw: Any, order: str
) -> list[list[str]]:
    """Each generation rewritten once per candidate label: the rationale it holds, that label in the slot.

    ``candidates``: the task's fixed labels, or the name of a column of ``raw`` with each example's own.
    Scored by :func:`hf_cotmi.label_confidences` in candidates mode, the softmax over these targets is the
    probability of each label given the input and the student's rationale (``rationale_first``: the label
    slot after the rationale; ``label_first``: the label before its explanation, normalised over labels
    with the explanation held fixed).

    Examples:
        >>> single_task_candidate_targets(["x is y . so the answer is no ."], ["yes", "no"], None,
        ...                               "rationale_first")
        [['x is y . So the answer is yes', 'x is y . So the answer is no']]
    """
    from hf_cotmi.data.parsing import parse_single_task_rationale, single_task_target

    per_example = raw[candidates] if isinstance(candidates, str) else [candidates] * len(generations)
    if len(per_example) != len(generations):
        raise ValueError(
            f"{len(generations)} generations but {len(per_example)} examples with candidates: expected one "
            "generation per test example"
        )
    return [
        [single_task_target(label, parse_single_task_rationale(text, order), order) for label in labels]
        for text, labels in zip(generations, per_example)
    ]


def single_task_length(data_args: Any) -> int:
    """Token limit of the single-task target: label, rationale and the marker between them."""
    return data_args.max_label_length + data_args.max_rationale_length + 8


# ---------------------------------------------------------------------------------------------------- runs


def _text(value: Any) -> Any:
    return getattr(value, "value", value)


def protocol(options: Options, data_description: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes a run's result; stored in the output folder and checked on a rerun."""
    training, data, run = options.training, options.data, options.run
    settings = {
        "student": portable_path(run.student),
        "max_steps": training.max_steps,
        "eval_steps": int(training.eval_steps),
        "patience": run.patience,
        "patience_start": run.patience_start,
        "batch_size": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "learning_rate": training.learning_rate,
        "lr_scheduler": _text(training.lr_scheduler_type),
        "warmup_steps": training.warmup_steps,
        "weight_decay": training.weight_decay,
        "mi_weight": run.mi_weight,
        "max_input_length": data.max_input_length,
        "max_label_length": data.max_label_length,
        "max_rationale_length": data.max_rationale_length,
        "label_source": data.label_source,
        "bf16": training.bf16,
        "optim": _text(training.optim),
        "generation_num_beams": training.generation_num_beams or 1,
        "task": None,  # filled in by the caller from the task spec
        "data": data_description,
    }
    # settings added later are recorded only when they are not the default, so that folders written
    # before them stay valid
    if run.train_fractions:
        settings["train_fractions"] = list(run.train_fractions)
    if run.single_task_order != "rationale_first":
        settings["single_task_order"] = run.single_task_order
    defaults = _default_options()
    for part, name in LATER_SETTINGS:
        value = getattr(getattr(options, part), name)
        if value != getattr(getattr(defaults, part), name):
            settings[name] = _text(value) if hasattr(value, "value") else value
    return settings


LATER_SETTINGS: tuple[tuple[str, str], ...] = (
    ("evaluation", "confidence"),
    ("evaluation", "label_candidates"),
    ("evaluation", "n_bins"),
    ("training", "predict_prefix"),
    ("training", "explain_prefix"),
    ("data", "chat_template"),
    ("data", "empty_rationale"),
    ("training", "max_grad_norm"),
    ("training", "adam_beta1"),
    ("training", "adam_beta2"),
    ("training", "adam_epsilon"),
    ("training", "label_smoothing_factor"),
    ("training", "fp16"),
    ("training", "lr_scheduler_kwargs"),
)
"""Options that change a run's result or its ECE, recorded in the protocol (and so checked when a folder is
continued) only when they differ from this script's default: ``(part of Options, field)``."""


def _default_options() -> Options:
    """The options of a command line that sets nothing but the output folder (this script's defaults)."""
    return parse_args(["--output-dir", "unused", "--report-only"])


def portable_path(path: str | None) -> str | None:
    """``path`` as results files record it: an absolute path becomes relative to the current folder.

    The files are shared (docs/assets/benchmarks/), so they name no folder of the machine they ran on; a
    Hub model id or a relative path is kept as given.
    """
    if path is None or not os.path.isabs(path):
        return path
    return os.path.relpath(path)


def check_protocol(out: Path, settings: dict[str, Any], force: bool) -> None:
    """Refuse to mix runs made with different settings in one output folder (unless ``force``)."""
    path = out / "protocol.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings and not force:
            diff = {
                k: (old.get(k), settings.get(k))
                for k in set(old) | set(settings)
                if old.get(k) != settings.get(k)
            }
            raise _error(
                f"{out} holds runs made with other settings {diff} (old, new); use another --output-dir or --force"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def early_stopping_callback(patience: int, start_step: int = 0) -> Any:
    """An ``EarlyStoppingCallback`` whose patience counts only evaluations at or after ``start_step``.

    Early in training a student often answers every example with the same class, so validation accuracy
    sits flat at the majority rate for a while (longer for DSS, whose label task has half the weight);
    plain patience would end such a run before it starts to learn. Evaluations before ``start_step``
    still update the best checkpoint; they just do not use up patience.

    Example:
        >>> cb = early_stopping_callback(2, start_step=300)
        >>> cb.early_stopping_patience, cb.start_step
        (2, 300)
    """
    from transformers import EarlyStoppingCallback

    class _EarlyStoppingFrom(EarlyStoppingCallback):
        def __init__(
            self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0, start_step: int = 0
        ):
            super().__init__(early_stopping_patience, early_stopping_threshold)
            self.start_step = start_step

        def on_evaluate(self, args, state, control, metrics, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.global_step < self.start_step:
                self.early_stopping_patience_counter = 0
                return
            super().on_evaluate(args, state, control, metrics, **kwargs)

        def state(self) -> dict:
            saved = super().state()
            saved["args"]["start_step"] = self.start_step
            return saved

    _EarlyStoppingFrom.__name__ = _EarlyStoppingFrom.__qualname__ = "EarlyStoppingFrom"
    return _EarlyStoppingFrom(patience, start_step=start_step)


TRAIN_CLOCK_FILE = "train_seconds.json"


def read_train_seconds(checkpoint: str | Path | None) -> float | None:
    """The training time saved with a checkpoint by :func:`train_clock_callback` (None: none saved).

    Example:
        >>> read_train_seconds(None) is None
        True
    """
    path = Path(checkpoint) / TRAIN_CLOCK_FILE if checkpoint else None
    return float(json.loads(path.read_text())["seconds"]) if path and path.is_file() else None


def train_clock_callback(previous_seconds: float | None = None) -> Any:
    """A callback that measures training time and saves the time so far with every checkpoint.

    A killed run (even by SIGKILL) resumes from its last checkpoint, so the time that counts is the time to
    reach that checkpoint (saved in it as ``train_seconds.json``) plus the time after the resume; work done
    after the checkpoint and lost is not counted. Evaluation during training is included; time the process
    spent stopped (``kill -STOP`` while something else had the machine) is not (:mod:`stopped_time`), and
    :meth:`stopped_seconds` says how much was left out since the resume.

    Example:
        >>> clock = train_clock_callback(12.5)
        >>> clock.seconds()
        12.5
    """
    from transformers import TrainerCallback

    class _TrainClock(TrainerCallback):
        def __init__(self, previous: float) -> None:
            self.previous = previous
            self.started: float | None = None
            self.stopped: float | None = None
            self.meter: StoppedTime | None = None

        def stopped_seconds(self) -> float:
            return self.meter.seconds if self.meter is not None else 0.0

        def seconds(self) -> float:
            end = self.stopped if self.stopped is not None else time.perf_counter()
            ran = end - self.started - self.stopped_seconds() if self.started is not None else 0.0
            return self.previous + ran

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.started, self.stopped = time.perf_counter(), None
            self.meter = StoppedTime().start()

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.stopped = time.perf_counter()
            if self.meter is not None:
                self.meter.stop()

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.is_world_process_zero:
                checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if checkpoint.is_dir():
                    write_json(checkpoint / TRAIN_CLOCK_FILE, {"seconds": self.seconds()})

    _TrainClock.__name__ = _TrainClock.__qualname__ = "TrainClock"
    return _TrainClock(previous_seconds or 0.0)


@dataclass
class Sweep:
    """What every run of a sweep shares: the options, the task spec, the loaded text and its features."""

    options: Options
    spec: Any
    data: Any
    student_loader: Any
    features: dict[str, Any] = field(default_factory=dict)  # "dss" / "single_task" -> features
    student_sha256: str | None = None  # of a local student folder's weights (student_weights_sha256)
    feature_reports: dict[str, Any] = field(default_factory=dict)  # "dss" / "single_task" -> their counts

    @staticmethod
    def _kind(method: Method) -> str:
        return "single_task" if method.single_target else "dss"

    def features_for(self, method: Method) -> Any:
        kind = self._kind(method)
        if kind not in self.features:
            model, tokenizer = self.student_loader()
            self.features[kind], self.feature_reports[kind] = method_features(
                self.data,
                tokenizer,
                self.options,
                model=model,
                single_task=method.single_target,
                return_report=True,
            )
        return self.features[kind]

    def dropped_rationales(self, method: Method) -> int:
        """Training examples the loader dropped for an empty rationale in this method's features."""
        self.features_for(method)
        return self.feature_reports[self._kind(method)].splits["train"].dropped_rationales


def run_training_arguments(method: Method, seed: int, options: Options, run_dir: Path) -> Any:
    """The user's ``DSSMITrainingArguments`` with this run's method, seed, folder and selection rule."""
    training = options.training
    label_length = single_task_length(options.data) if method.single_target else options.data.max_label_length
    return replace(
        training,
        output_dir=str(run_dir),
        label_loss_weight=method.label_loss_weight,
        rationale_loss_weight=method.rationale_loss_weight,
        mi_loss_weight=method.mi_loss_weight,
        mi_variant=method.mi_variant,
        mi_reduction=method.mi_reduction,
        mi_divergence=method.mi_divergence,
        eval_strategy="steps",
        save_strategy="steps",
        save_steps=training.eval_steps,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_accuracy",
        greater_is_better=True,
        # a resumed run keeps its early-stopping count (transformers restores it only when asked)
        restore_callback_states_from_checkpoint=options.run.patience > 0,
        logging_steps=max(1, min(50, int(training.eval_steps))),
        generation_max_length=label_length + 1,
        generation_num_beams=training.generation_num_beams or 1,
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def test_phase(trainer: Any, method: Method, sweep: Sweep, test: Any, raw_test: Any) -> dict[str, Any]:
    """The test split, touched once: generated-label accuracy against gold, confidence, ECE, choice ranking.

    The ECE is computed against the correctness that belongs to the confidence: in candidates mode the
    arg-max candidate's, which for a multiple-choice task is the choice-ranking accuracy (reported beside
    the generated label's accuracy).
    """
    import torch

    from hf_cotmi import expected_calibration_error, label_confidences
    from hf_cotmi.calibration import average_confidence
    from hf_cotmi.data.parsing import parse_single_task_label

    options, spec = sweep.options, sweep.spec
    prediction = trainer.predict(test, metric_key_prefix="test")
    decoded = [r["prediction"] for r in trainer.decode_predictions(prediction.predictions)]
    is_correct = spec.is_correct
    mode, candidates = spec.resolve_confidence(
        options.evaluation.confidence, options.evaluation.label_candidates, raw_test.column_names
    )
    scored = test
    if method.single_target:
        order = options.run.single_task_order

        def is_correct(text: str, gold: str) -> bool:
            return spec.is_correct(parse_single_task_label(text, order), gold)

        if mode == "candidates":
            # each candidate label in the label slot, after the rationale the student wrote: the softmax
            # over these targets is the label's confidence, comparable with the other methods' candidates
            targets = single_task_candidate_targets(decoded, candidates, raw_test, order)
            scored = test.add_column(SINGLE_TASK_CANDIDATES, targets)
            candidates = SINGLE_TASK_CANDIDATES
    model = trainer.model.eval()
    record: dict[str, Any] = {
        "test_accuracy": float(prediction.metrics["test_accuracy"]),
        "confidence_mode": mode,
    }
    label_length = single_task_length(options.data) if method.single_target else options.data.max_label_length
    try:
        with torch.no_grad():
            confidences = label_confidences(
                model,
                trainer.processing_class,
                scored,
                mode=mode,
                label_candidates=candidates,
                batch_size=options.training.per_device_eval_batch_size,
                max_length=label_length + 1,
                num_beams=options.training.generation_num_beams or 1,
                is_correct=is_correct,
                chat_template=options.data.chat_template,
            )
    except (AttributeError, NotImplementedError, TypeError, ValueError) as error:
        if not is_causal(model):
            raise
        # a decoder-only student whose confidence cannot be computed (an unusual forward): accuracy stands,
        # the confidence is recorded as missing, with the reason, and left out of the ECE means
        logger.warning("no confidence for this causal student (%s): ECE not measured", error)
        record.update(
            test_ece=None,
            test_avg_confidence=None,
            test_confidence_accuracy=None,
            confidence_error=str(error),
        )
        confident = [None] * len(decoded)
    else:
        record.update(
            test_ece=float(
                expected_calibration_error(
                    confidences.confidences, confidences.correct, n_bins=options.evaluation.n_bins
                )
            ),
            test_avg_confidence=float(average_confidence(confidences.confidences)),
            test_confidence_accuracy=float(confidences.accuracy),
        )
        confident = confidences.predictions
        if method.single_target:
            confident = [parse_single_task_label(text, order) for text in confident]
        if mode == "candidates":
            record["test_choice_accuracy"] = float(confidences.accuracy)
    golds = raw_test["label"]
    record["first_test_predictions"] = [
        {"prediction": p, "confident_prediction": c, "gold": g}
        for p, c, g in zip(decoded[:5], confident[:5], golds[:5])
    ]
    return record


def train_one(
    method: Method, seed: int, sweep: Sweep, run_dir: Path, fraction: float | None = None
) -> dict[str, Any]:
    """Train (or resume) one run, select on validation, evaluate once on test; returns its record."""
    from hf_cotmi import DSSMITrainer, build_compute_metrics, latest_complete_checkpoint
    from hf_cotmi.data.parsing import parse_single_task_label

    options = sweep.options
    features = sweep.features_for(method)
    model, tokenizer = sweep.student_loader()
    train = fraction_of(features["train"], fraction)
    if not method.uses_rationales:
        train = train.remove_columns(
            [
                c
                for c in ("expl_input_ids", "expl_attention_mask", "rationale_labels")
                if c in train.column_names
            ]
        )
    training_args = run_training_arguments(method, seed, options, run_dir)
    # a process killed while saving (a time limit, a preempted job) leaves a half-written checkpoint: skipped
    last = latest_complete_checkpoint(run_dir) if run_dir.exists() else None
    if last and training_args.save_only_model:
        # model-only checkpoints cannot resume training: start this run again
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
        last = None
    # training time up to the checkpoint resumed from (steps after it are trained again, not counted twice)
    # read now: the checkpoint resumed from may be rotated away during training
    resumed_clock = read_train_seconds(last)
    clock = train_clock_callback(resumed_clock)
    callbacks = [clock]
    if options.run.patience > 0:
        callbacks.append(early_stopping_callback(options.run.patience, options.run.patience_start))
    parser = None
    if method.single_target:
        order = options.run.single_task_order

        def parser(text: str) -> str:
            return parse_single_task_label(text, order)

    trainer = DSSMITrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=features["valid"],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer, task=sweep.spec, prediction_parser=parser),
        callbacks=callbacks,
    )
    if last:
        print(f"  resuming from {last}", flush=True)
    train_output = trainer.train(resume_from_checkpoint=last)

    state = trainer.state
    valid_history = [
        {"step": e["step"], "accuracy": e["eval_accuracy"]} for e in state.log_history if "eval_accuracy" in e
    ]
    best_step = getattr(state, "best_global_step", None)
    if best_step is None and state.best_model_checkpoint:
        best_step = int(state.best_model_checkpoint.rstrip("/").rsplit("-", 1)[-1])

    # the test split is touched here, once, with the checkpoint chosen on validation
    start_test, test_stops = time.perf_counter(), StoppedTime().start()
    tested = test_phase(trainer, method, sweep, features["test"], sweep.data["test"])
    test_seconds = time.perf_counter() - start_test - test_stops.stop().seconds
    record = {
        "method": method.name,
        "seed": seed,
        **{k: v for k, v in tested.items() if k != "first_test_predictions"},
        "best_valid_accuracy": float(state.best_metric) if state.best_metric is not None else None,
        "best_step": best_step,
        "steps_trained": int(state.global_step),
        "stopped_early": int(state.global_step) < training_args.max_steps,
        "valid_history": valid_history,
        "train_loss": float(train_output.training_loss),
        "train_seconds": round(clock.seconds(), 1),
        # False when resumed from a checkpoint without a clock (written by an older replicate.py)
        "train_seconds_complete": not last or resumed_clock is not None,
        "test_seconds": round(test_seconds, 1),
        # wall time this process spent stopped (kill -STOP), left out of the two times above
        "stopped_seconds": round(clock.stopped_seconds() + test_stops.seconds, 1),
        "resumed": bool(last),
        "test_examples": features["test"].num_rows,
        "train_examples": train.num_rows,
        "first_test_predictions": tested["first_test_predictions"],
    }
    if fraction is not None:
        record["train_fraction"] = fraction
    if method.single_target:
        record["single_task_order"] = options.run.single_task_order
    if sweep.student_sha256 is not None:
        record["student_sha256"] = sweep.student_sha256
    if options.data.empty_rationale == "drop":
        # the protocol counts the examples selected; train_examples above, those trained on, after the drop
        record["train_dropped_rationales"] = sweep.dropped_rationales(method)
    write_json(run_dir / "done.json", record)
    if not options.run.keep_checkpoints:
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return record


def run_folder(out: Path, name: str, seed: int, fraction: float | None = None) -> Path:
    """``OUT/runs/<method>/seed<k>``, or ``OUT/runs/frac<f>/<method>/seed<k>`` in a size sweep."""
    base = out / "runs" if fraction is None else out / "runs" / f"frac{fraction_key(fraction)}"
    return base / name / f"seed{seed}"


def run_sweep(sweep: Sweep, out: Path) -> list[dict[str, Any]]:
    """Run every (fraction, seed, method) not yet done, seed-major within a fraction (a cut sweep has whole
    seeds)."""
    options = sweep.options
    methods = build_methods(options.run.mi_weight)
    fractions: list[float | None] = list(options.run.train_fractions or [None])
    records = []
    total = len(fractions) * len(options.run.seeds) * len(options.methods)
    index = 0
    for fraction in fractions:
        at = "" if fraction is None else f" (train fraction {fraction_key(fraction)})"
        for seed in options.run.seeds:
            for name in options.methods:
                index += 1
                run_dir = run_folder(out, name, seed, fraction)
                done = run_dir / "done.json"
                if done.exists():
                    print(f"[{index}/{total}] {name} seed {seed}{at}: done, skipped", flush=True)
                    finished = read_done(done, name, seed, fraction)
                    warn_if_other_student(finished, sweep.student_sha256, done)
                    records.append(finished)
                    continue
                print(f"[{index}/{total}] {name} seed {seed}{at}: training", flush=True)
                run_dir.mkdir(parents=True, exist_ok=True)
                record = train_one(methods[name], seed, sweep, run_dir, fraction)
                records.append(record)
                ece = "n/a" if record["test_ece"] is None else f"{record['test_ece']:.4f}"
                choice = record.get("test_choice_accuracy")
                choice_text = "" if choice is None else f", choice-ranking accuracy {choice:.4f}"
                print(
                    f"[{index}/{total}] {name} seed {seed}{at}: test accuracy {record['test_accuracy']:.4f}"
                    f"{choice_text}, ECE {ece}, best step {record['best_step']}/{record['steps_trained']}, "
                    f"{record['train_seconds']:.0f} s",
                    flush=True,
                )
    return records


def warn_if_other_student(record: dict[str, Any], student_sha256: str | None, done: Path) -> bool:
    """Warn (and return True) when a finished run was trained on other student weights than this sweep's.

    Example:
        >>> done = Path("runs/dss/seed0/done.json")
        >>> warn_if_other_student({"student_sha256": "ab" * 32}, "cd" * 32, done)  # doctest: +ELLIPSIS
        warning: runs/dss/seed0/done.json was trained on student weights abababababab, this sweep's are ...
        True
        >>> warn_if_other_student({}, "cd" * 32, Path("done.json"))  # not recorded (an older run)
        False
    """
    recorded = record.get("student_sha256")
    if same_student_weights(recorded, student_sha256):
        return False
    print(
        f"warning: {done} was trained on student weights {recorded[:12]}, this sweep's are "
        f"{student_sha256[:12]}: the student folder was rebuilt or changed; the report lists both",
        flush=True,
    )
    return True


def done_problem(done: Path, method: str, seed: int, fraction: float | None = None) -> str | None:
    """What keeps a run folder's ``done.json`` from being that run's finished record (None: nothing).

    It must be a JSON object, the record of this folder's method, seed and fraction, with a usable test
    accuracy (:func:`sweep_report.record_problem`). ``done.json`` is written whole or not at all, so a
    broken one was not written by this script: the message says to delete it, which trains the run again.

    Example:
        >>> import tempfile
        >>> done = Path(tempfile.mkdtemp()) / "done.json"
        >>> _ = done.write_text('{"method": "dss", "seed": 1, "test_accuracy": 0.7}')
        >>> done_problem(done, "dss", 0).endswith("holds dss seed 1, not dss seed 0: it is another run's record")
        True
    """
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        record, reason = None, str(error)
    else:
        reason = f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record, dict):
        return f"{done} is not a finished run's record ({reason}): delete it to train the run again"
    problem = record_problem(record)
    if problem:
        return f"{done}: {problem}"
    expected = {"method": method, "seed": seed, "train_fraction": fraction}
    if any(record.get(key) != value for key, value in expected.items()):
        return f"{done} holds {run_name(record)}, not {run_name(expected)}: it is another run's record"
    return None


def read_done(done: Path, method: str, seed: int, fraction: float | None = None) -> dict[str, Any]:
    """The finished record in ``done``, the run of ``method``, ``seed`` and ``fraction``; a clear error (exit
    status 2) naming the file when it is not (:func:`done_problem`).

    Example:
        >>> import tempfile
        >>> done = Path(tempfile.mkdtemp()) / "done.json"
        >>> _ = done.write_text('{"method": "dss", "seed": 0, "test_accuracy": 0.7}')
        >>> read_done(done, "dss", 0)["test_accuracy"]
        0.7
    """
    problem = done_problem(done, method, seed, fraction)
    if problem:
        raise _error(problem)
    return json.loads(done.read_text(encoding="utf-8"))


def collect_records(
    out: Path, methods: Sequence[str], seeds: Sequence[int], fractions: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """The finished runs in an output folder (for ``--report-only``); each run once, whatever is repeated
    in ``methods``, ``seeds`` or ``fractions``. A run without ``done.json`` (unfinished) is not among them;
    a ``done.json`` that is not its run's record stops the report (:func:`read_done`)."""
    records = []
    for fraction in dict.fromkeys(fractions or [None]):
        for seed in dict.fromkeys(seeds):
            for name in dict.fromkeys(methods):
                done = run_folder(out, name, seed, fraction) / "done.json"
                if done.exists():
                    records.append(read_done(done, name, seed, fraction))
    return records


# ---------------------------------------------------------------------------------------------------- main


PLAN_FILE = "sweep_plan.json"
# set by parallel_sweep.py for its jobs: the whole sweep's methods and seeds, as JSON, for the plan
SWEEP_PLAN_VARIABLE = "REPLICATE_SWEEP_PLAN"


def read_plan(out: Path) -> tuple[list[str], list[int]]:
    """The methods and seeds the sweeps in ``out`` set out to run (``sweep_plan.json``; empty lists without it).

    A report written while a sweep is under way counts its finished runs against this plan (``7/48 runs
    finished``), not against the runs that happen to have finished.

    Example:
        >>> read_plan(Path("no-such-folder"))
        ([], [])
    """
    path = out / PLAN_FILE
    if not path.is_file():
        return [], []
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        methods, seeds = plan["methods"], plan["seeds"]
        if not isinstance(methods, list) or not isinstance(seeds, list):
            raise TypeError("methods and seeds must be lists")
        if not all(isinstance(m, str) for m in methods) or not all(type(s) is int for s in seeds):
            raise TypeError("methods must be names, seeds integers")
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise _error(f"{path}: expected {{'methods': [names], 'seeds': [integers]}} ({error})") from error
    return list(methods), list(seeds)


def record_plan(out: Path, methods: Sequence[str], seeds: Sequence[int | str]) -> None:
    """Add ``methods`` and ``seeds`` to the folder's plan (:func:`read_plan`); what was planned before stays.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> record_plan(folder, ["dss"], [1]); record_plan(folder, ["finetune", "dss"], ["0"])
        >>> read_plan(folder)
        (['finetune', 'dss'], [0, 1])
    """
    old_methods, old_seeds = read_plan(out)
    names = set(old_methods) | set(methods)
    ordered = [m for m in METHOD_NAMES if m in names] + sorted(names - set(METHOD_NAMES))
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / PLAN_FILE, {"methods": ordered, "seeds": sorted(set(old_seeds) | {int(s) for s in seeds})}
    )


def finished_on_disk(out: Path) -> tuple[list[str], list[int]]:
    """The methods and seeds that have a finished run (``done.json``) anywhere under ``OUT/runs``.

    Methods come in the order of :data:`METHOD_NAMES`, seeds ascending.
    """
    names, seeds = set(), set()
    for done in (out / "runs").glob("**/seed*/done.json"):
        names.add(done.parent.parent.name)
        seeds.add(int(done.parent.name.removeprefix("seed")))
    return [m for m in METHOD_NAMES if m in names], sorted(seeds)


def report_scope(
    methods: Sequence[str], seeds: Sequence[int | str], out: Path
) -> tuple[list[str], list[int]]:
    """The methods and seeds a report covers: the given ones, the folder's plan (:func:`read_plan`) and every
    finished run's in the folder.

    A folder can be filled by several processes (the workers of ``parallel_sweep.py``, or a later sweep of
    new methods beside the DSS runs they pair with); a report over all of them keeps one table, and the
    paired differences keep their DSS runs. Methods come in the order of :data:`METHOD_NAMES` (a name
    outside it last, for the parser to refuse), seeds ascending.

    Example:
        >>> report_scope(["dss_mi_kl", "dss"], ["1", 0], Path("no-such-folder"))
        (['dss', 'dss_mi_kl'], [0, 1])
    """
    disk_methods, disk_seeds = finished_on_disk(out)
    plan_methods, plan_seeds = read_plan(out)
    names = set(methods) | set(disk_methods) | set(plan_methods)
    ordered = [m for m in METHOD_NAMES if m in names]
    ordered += sorted(names - set(ordered))
    return ordered, sorted({int(s) for s in seeds} | set(disk_seeds) | set(plan_seeds))


def report_only(options: Options, out: Path, *, seeds_given: bool = True) -> dict[str, Any]:
    """Rewrite the report from the finished runs (``runs/*/done.json``, else the runs in results.json).

    Without ``--methods`` / ``--seeds`` it reports every method and seed of the folder's plan
    (``sweep_plan.json``) and with a finished run on disk (the folder may have been filled by several
    processes, or its results.json written by an older version that reported only its own process's runs).
    """
    stored = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    if (out / "protocol.json").is_file():
        settings = json.loads((out / "protocol.json").read_text())
    elif "protocol" in stored:
        settings = stored["protocol"]
    else:
        raise _error(f"{out} has neither protocol.json nor results.json: nothing to report")
    planned = report_scope([], [], out)  # the plan and the finished runs
    methods = options.run.methods or planned[0] or stored.get("methods") or list(DEFAULT_METHODS)
    seeds = options.run.seeds if seeds_given else (planned[1] or stored.get("seeds") or options.run.seeds)
    fractions = options.run.train_fractions or settings.get("train_fractions")
    records = collect_records(out, methods, seeds, fractions)
    if not records:
        # the report's own runs, those in its scope only: a run of another fraction would count as finished
        records = [
            r
            for r in stored.get("runs", [])
            if r["method"] in methods
            and r["seed"] in seeds
            and r.get("train_fraction") in (fractions or [None])
        ]
    return write_report(out, records, methods, seeds, settings, fractions)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep and write the report; returns the per-method summary."""
    options = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    import transformers

    # transformers' warnings off; hf_cotmi's stay on (a loader's counts of what it skipped are reported)
    transformers.logging.set_verbosity_error()
    if options.run.threads:
        torch.set_num_threads(options.run.threads)
    out = Path(options.training.output_dir)
    if options.run.report_only:
        given = list(sys.argv[1:] if argv is None else argv)
        seeds_given = any(a == "--seeds" or a.startswith("--seeds=") for a in given)
        summary = report_only(options, out, seeds_given=seeds_given)
        print((out / "results.md").read_text(), flush=True)
        return summary
    data, spec, description = select_splits(options)
    settings = protocol(options, description)
    settings["task"] = spec.metric
    check_protocol(out, settings, options.run.force)
    record_plan(out, options.methods, options.run.seeds)
    if os.environ.get(SWEEP_PLAN_VARIABLE):  # a job of parallel_sweep.py: its whole sweep is the plan
        sweep = json.loads(os.environ[SWEEP_PLAN_VARIABLE])
        record_plan(out, sweep["methods"], sweep["seeds"])
    texts = _vocabulary(data)

    def student_loader() -> tuple[Any, Any]:
        return make_student(options.run.student, texts)

    sweep = Sweep(
        options, spec, data, student_loader, student_sha256=student_weights_sha256(options.run.student)
    )
    sweep_start = time.perf_counter()
    run_sweep(sweep, out)
    print(f"sweep sitting took {(time.perf_counter() - sweep_start) / 60:.1f} min", flush=True)
    # over every finished run in the folder, not only this process's: parallel workers share the folder,
    # and each one's report would otherwise replace the others' runs with its own
    methods, seeds = report_scope(options.methods, options.run.seeds, out)
    fractions = options.run.train_fractions
    summary = write_report(
        out, collect_records(out, methods, seeds, fractions), methods, seeds, settings, fractions
    )
    print((out / "results.md").read_text(), flush=True)
    fingerprint = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    print(f"wrote {out / 'results.json'} (protocol {fingerprint})", flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
