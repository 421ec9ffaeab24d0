#!/usr/bin/env python3
"""Compare standard fine-tuning, DSS and DSS + MI on equal terms, over several seeds.

For one dataset (a Distilling Step-by-Step release dataset, or your own chain-of-thought data) and one
student (a Hub name or a local folder), this trains four methods with the same step budget, learning
rate, batch size, evaluation schedule and early-stopping rule, for N seeds each:

==================  ==========================================================================
``finetune``        label task only (``rationale_loss_weight=0, mi_loss_weight=0``)
``dss``             Distilling Step-by-Step: 0.5 label + 0.5 rationale
``dss_mi_paper``    DSS + 0.1 MI loss, ``mi_variant="paper"`` (the released behaviour)
``dss_mi_masked``   DSS + 0.1 MI loss, ``mi_variant="masked"`` (padding excluded, one softmax)
==================  ==========================================================================

Each run evaluates on the *validation* split every ``--eval-steps`` steps, keeps the checkpoint with the
best validation accuracy (``load_best_model_at_end``); with ``--patience N`` it stops early when validation
accuracy has not improved for N evaluations (off by default: on a small validation set early stopping acts
on noise). Only then is the *test* split touched, once: generation accuracy,
expected calibration error and average confidence. The output folder gets ``results.json`` (every run and
the per-method mean and standard deviation), ``results.md`` (a markdown table) and ``accuracy.png``
(test accuracy per method with error bars and each seed as a dot).

Resumable: each run lives in ``OUT/runs/<method>/seed<k>/``. A finished run has ``done.json`` and is
skipped; an unfinished one continues from its last checkpoint. Rerun the same command to continue a
sweep; a rerun with different settings that change the results is refused (``--force`` overrides).

Examples::

    # e-SNLI on a CPU (the e-SNLI release has no train file: its validation split is the training data
    # and the validation set used for selection is carved from it, disjoint from the training examples)
    python examples/benchmarks/replicate.py --dataset esnli --data-dir ../shared/data/dss \\
        --train-split valid --train-size 1500 --valid-size 200 --test-size 400 \\
        --student /work/bench_runs/student --max-steps 1200 --eval-steps 100 \\
        --seeds 0 1 2 --output-dir /work/bench_runs/esnli

    # your own data (JSON Lines / CSV / Parquet with input, label, rationale columns)
    python examples/benchmarks/replicate.py --train-file train.jsonl --test-file test.jsonl \\
        --student google/t5-v1_1-base --output-dir out/mine

    # a 30-second check that everything runs (tiny model, synthetic data)
    python examples/benchmarks/replicate.py --smoke --output-dir /tmp/replicate-smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("replicate")

NLI_LABELS = ["entailment", "neutral", "contradiction"]


@dataclass(frozen=True)
class Method:
    """Loss settings of one compared method."""

    name: str
    title: str
    label_loss_weight: float
    rationale_loss_weight: float
    mi_loss_weight: float
    mi_variant: str = "paper"

    @property
    def uses_rationales(self) -> bool:
        """Whether the method trains on the rationale task."""
        return self.rationale_loss_weight > 0 or self.mi_loss_weight > 0


def build_methods(mi_weight: float = 0.1, dss_weights: tuple[float, float] = (0.5, 0.5)) -> dict[str, Method]:
    """The four compared methods, keyed by name.

    Args:
        mi_weight: weight of the MI term in the two DSS + MI methods (0.1 in Chen et al. 2024).
        dss_weights: (label, rationale) weights of the DSS methods (0.5, 0.5 in both papers).

    Example:
        >>> sorted(build_methods())
        ['dss', 'dss_mi_masked', 'dss_mi_paper', 'finetune']
    """
    label, rationale = dss_weights
    return {
        "finetune": Method("finetune", "Standard fine-tuning", 1.0, 0.0, 0.0),
        "dss": Method("dss", "DSS", label, rationale, 0.0),
        "dss_mi_paper": Method("dss_mi_paper", "DSS + MI (paper)", label, rationale, mi_weight, "paper"),
        "dss_mi_masked": Method("dss_mi_masked", "DSS + MI (masked)", label, rationale, mi_weight, "masked"),
    }


METHOD_NAMES = tuple(build_methods())


# ----------------------------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="DSS release dataset: svamp, cqa, esnli or anli1")
    data.add_argument("--data-dir", help="the DSS release's datasets/ folder (holding <dataset>/)")
    data.add_argument("--label-source", default="gt", choices=["gt", "llm"], help="train labels: gold or LLM")
    data.add_argument("--train-file", help="your own training data (jsonl/json/csv/parquet)")
    data.add_argument("--valid-file", help="your own validation data (default: carved from training data)")
    data.add_argument("--test-file", help="your own test data")
    data.add_argument("--input-column", default="input")
    data.add_argument("--label-column", default="label")
    data.add_argument("--rationale-column", default="rationale")
    data.add_argument("--train-split", default="train", help="split used as training data")
    data.add_argument(
        "--valid-split",
        default="valid",
        help="split used for checkpoint selection; when it equals --train-split (or is missing) the "
        "selection set is carved from the training split, disjoint from the training examples",
    )
    data.add_argument("--test-split", default="test", help="split used for the final report (touched once)")
    data.add_argument("--train-size", type=int, help="subsample the training set to this many examples")
    data.add_argument("--valid-size", type=int, help="validation examples (carved or subsampled)")
    data.add_argument("--test-size", type=int, help="subsample the test set")
    data.add_argument("--data-seed", type=int, default=0, help="seed of the subsampling (same for all runs)")
    data.add_argument("--task", choices=["text", "equation"], help="accuracy metric (default: from dataset)")
    data.add_argument("--max-input-length", type=int, default=128)
    data.add_argument("--max-label-length", type=int, default=16)
    data.add_argument("--max-rationale-length", type=int, default=64)

    model = parser.add_argument_group("student and training")
    model.add_argument("--student", help="Hub name or local folder of a seq2seq model; 'tiny' builds one")
    model.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    model.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    model.add_argument("--max-steps", type=int, default=1000, help="step budget of every run")
    model.add_argument("--eval-steps", type=int, default=100, help="validate (and checkpoint) every N steps")
    model.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop a run after this many evaluations without a better validation accuracy (default 0: never; "
        "every run trains the full budget and keeps its best validation checkpoint). On a small validation set "
        "a dip of one or two evaluations is noise, and early stopping then decides the ranking",
    )
    model.add_argument(
        "--patience-start",
        type=int,
        default=0,
        help="count evaluations towards --patience only from this step on, so that the flat validation "
        "accuracy of the first steps (a student still answering with one class) does not stop a run",
    )
    model.add_argument("--batch-size", type=int, default=16)
    model.add_argument("--eval-batch-size", type=int, default=64)
    model.add_argument("--gradient-accumulation-steps", type=int, default=1)
    model.add_argument("--learning-rate", type=float, default=5e-5)
    model.add_argument("--lr-scheduler", default="linear", help="transformers lr_scheduler_type")
    model.add_argument("--warmup-steps", type=int, default=0)
    model.add_argument("--weight-decay", type=float, default=0.0)
    model.add_argument("--mi-weight", type=float, default=0.1, help="MI loss weight of the DSS + MI methods")
    model.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    model.add_argument("--optim", default="adamw_torch", help="transformers optimizer name")
    model.add_argument("--generation-num-beams", type=int, default=1)

    report = parser.add_argument_group("report and housekeeping")
    report.add_argument("--output-dir", required=True, help="folder for runs, results.json, table and plot")
    report.add_argument("--confidence", choices=["candidates", "sequence", "first_token"])
    report.add_argument(
        "--label-candidates",
        nargs="+",
        help="candidate labels for confidence, or one column name holding each example's candidates "
        "(default: the NLI labels for esnli/anli1, the choices column for cqa, none otherwise)",
    )
    report.add_argument("--n-bins", type=int, default=10, help="ECE bins")
    report.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints of finished runs")
    report.add_argument(
        "--save-only-model",
        action="store_true",
        help="checkpoints without optimizer state (much faster on a GPU); an interrupted run then restarts "
        "from scratch instead of resuming",
    )
    report.add_argument("--threads", type=int, help="torch.set_num_threads")
    report.add_argument(
        "--force", action="store_true", help="reuse an output folder made with other settings"
    )
    report.add_argument("--report-only", action="store_true", help="only aggregate the finished runs")
    report.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model and synthetic data (unless --dataset/--train-file given), tiny budget: a quick check",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        if args.student is None:
            args.student = "tiny"
        if args.dataset is None and args.train_file is None:
            args.dataset = "synthetic"
        defaults = {"max_steps": 1000, "eval_steps": 100, "seeds": [0, 1, 2]}
        smoke = {"max_steps": 4, "eval_steps": 2, "seeds": [0]}
        for key, value in smoke.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
        for key, value in {"train_size": 32, "valid_size": 8, "test_size": 8}.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if args.student is None:
        parser.error("--student is required (a Hub name, a local folder, or 'tiny')")
    if (args.dataset is None) == (args.train_file is None):
        parser.error("give exactly one of --dataset (with --data-dir) and --train-file")
    if args.dataset not in (None, "synthetic") and args.data_dir is None:
        parser.error("--dataset needs --data-dir")
    if args.eval_steps < 1 or args.max_steps < 1:
        parser.error("--max-steps and --eval-steps must be positive")
    return args


# ----------------------------------------------------------------------------------------------------- data


def synthetic_dataset(n: int, seed: int = 0) -> list[dict[str, str]]:
    """A small NLI-shaped task with rationales: is the hypothesis colour the premise colour?

    Example:
        >>> synthetic_dataset(1)[0]["label"] in NLI_LABELS
        True
    """
    rng = random.Random(seed)
    colours = ["red", "blue", "green", "black", "white"]
    things = ["car", "dog", "house", "ball", "hat"]
    rows = []
    for _ in range(n):
        colour, thing = rng.choice(colours), rng.choice(things)
        kind = rng.randrange(3)
        if kind == 0:
            hypothesis, label, why = (
                f"the {thing} is {colour}",
                "entailment",
                f"a {colour} {thing} is {colour}",
            )
        elif kind == 1:
            other = rng.choice([c for c in colours if c != colour])
            hypothesis, label, why = f"the {thing} is {other}", "contradiction", f"{colour} is not {other}"
        else:
            hypothesis, label, why = f"the {thing} is big", "neutral", f"a {colour} {thing} may not be big"
        rows.append({"input": f"a {colour} {thing} . {hypothesis}", "label": label, "rationale": why + " ."})
    return rows


def _subsample(dataset: Any, size: int | None, seed: int) -> Any:
    if size is None or size >= dataset.num_rows:
        return dataset
    return dataset.shuffle(seed=seed).select(range(size))


def load_splits(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Load train / valid / test text splits, subsampled; returns them and a description of the data."""
    from datasets import Dataset, DatasetDict

    if args.dataset == "synthetic":
        data = DatasetDict(
            {
                "train": Dataset.from_list(synthetic_dataset(max(args.train_size or 64, 8), seed=1)),
                "valid": Dataset.from_list(synthetic_dataset(max(args.valid_size or 16, 4), seed=2)),
                "test": Dataset.from_list(synthetic_dataset(max(args.test_size or 16, 4), seed=3)),
            }
        )
        source = {"train": "train", "valid": "valid", "test": "test"}
    elif args.dataset is not None:
        from hf_cotmi import load_dss_dataset

        data = load_dss_dataset(
            args.dataset, args.data_dir, label_source=args.label_source, valid_fraction=0.1, seed=0
        )
        source = {"train": args.train_split, "valid": args.valid_split, "test": args.test_split}
    else:
        from hf_cotmi import load_cot_dataset

        files = {"train": args.train_file}
        if args.valid_file:
            files["valid"] = args.valid_file
        if args.test_file:
            files["test"] = args.test_file
        data = load_cot_dataset(
            files,
            input_column=args.input_column,
            label_column=args.label_column,
            rationale_column=args.rationale_column,
        )
        source = {"train": "train", "valid": "valid", "test": "test"}

    for role in ("train", "test"):
        if source[role] not in data:
            raise SystemExit(f"the {role} split {source[role]!r} is not in the data (splits: {list(data)})")
    train = data[source["train"]]
    carve = source["valid"] == source["train"] or source["valid"] not in data
    if carve:
        # selection examples come from the training split, disjoint from the training examples
        n_valid = args.valid_size or max(1, round(0.1 * train.num_rows))
        if n_valid >= train.num_rows:
            raise SystemExit(f"--valid-size {n_valid} leaves no training examples out of {train.num_rows}")
        shuffled = train.shuffle(seed=args.data_seed)
        valid = shuffled.select(range(n_valid))
        train = shuffled.select(range(n_valid, shuffled.num_rows))
    else:
        valid = _subsample(data[source["valid"]], args.valid_size, args.data_seed)
    train = _subsample(train, args.train_size, args.data_seed)
    test = _subsample(data[source["test"]], args.test_size, args.data_seed)
    if source["test"] in (source["train"], source["valid"]):
        raise SystemExit("the test split must differ from the training and validation splits")
    description = {
        "dataset": args.dataset or portable_path(args.train_file),
        "train": {"split": source["train"], "examples": train.num_rows},
        "valid": {
            "split": f"carved from {source['train']}" if carve else source["valid"],
            "examples": valid.num_rows,
        },
        "test": {"split": source["test"], "examples": test.num_rows},
        "data_seed": args.data_seed,
    }
    return DatasetDict({"train": train, "valid": valid, "test": test}), description


# -------------------------------------------------------------------------------------------------- student


def load_student(name: str, texts: Sequence[str], seed: int = 0) -> tuple[Any, Any]:
    """Load a seq2seq model and tokenizer; ``"tiny"`` builds a tiny T5 over the words of ``texts``."""
    if name == "tiny":
        from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer

        tokenizer = build_word_tokenizer(list(texts) + ["predict : explain : " + " ".join(NLI_LABELS)])
        return build_tiny_seq2seq(tokenizer, "t5", d_model=32, seed=seed), tokenizer
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(name), AutoTokenizer.from_pretrained(name)


def _texts(data: Any) -> list[str]:
    texts: list[str] = []
    for split in data.values():
        for column in ("input", "label", "rationale", "premise", "hypothesis"):
            if column in split.column_names:
                texts.extend(str(x) for x in split[column])
    return texts


def tokenise(data: Any, tokenizer: Any, args: argparse.Namespace) -> Any:
    """DSS features: train keeps the rationale task; valid and test hold the label task only."""
    from hf_cotmi import prepare_dss_features

    common = dict(
        max_input_length=args.max_input_length,
        max_label_length=args.max_label_length,
        max_rationale_length=args.max_rationale_length,
    )
    train = prepare_dss_features(data["train"], tokenizer, **common)
    from datasets import DatasetDict

    held_out = prepare_dss_features(
        DatasetDict({"valid": data["valid"], "test": data["test"]}), tokenizer, with_rationale=False, **common
    )
    return DatasetDict({"train": train, "valid": held_out["valid"], "test": held_out["test"]})


# ---------------------------------------------------------------------------------------------------- runs


def protocol(args: argparse.Namespace, data_description: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes a run's result; stored in the output folder and checked on a rerun."""
    keys = [
        "student",
        "max_steps",
        "eval_steps",
        "patience",
        "patience_start",
        "batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "lr_scheduler",
        "warmup_steps",
        "weight_decay",
        "mi_weight",
        "max_input_length",
        "max_label_length",
        "max_rationale_length",
        "label_source",
        "bf16",
        "optim",
        "generation_num_beams",
        "task",
    ]
    settings = {k: getattr(args, k) for k in keys}
    settings["student"] = portable_path(settings["student"])
    settings["data"] = data_description
    return settings


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
            raise SystemExit(
                f"{out} holds runs made with other settings {diff} (old, new); use another --output-dir "
                "or --force"
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, settings)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _calibration_setup(args: argparse.Namespace) -> tuple[str, Any]:
    candidates: Any = args.label_candidates
    if candidates is not None and len(candidates) == 1:
        candidates = candidates[0]  # a column name
    if candidates is None:
        if args.dataset in ("esnli", "anli1", "synthetic"):
            candidates = NLI_LABELS
        elif args.dataset == "cqa":
            candidates = "choices"
    mode = args.confidence or ("candidates" if candidates is not None else "sequence")
    return mode, candidates if mode == "candidates" else None


def _is_correct(task: str) -> Any:
    if task != "equation":
        return None
    from hf_cotmi import equation_accuracy

    return lambda prediction, gold: equation_accuracy([prediction], [gold]) == 1.0


def _patience_start_text(settings: dict[str, Any]) -> str:
    start = settings.get("patience_start", 0)
    return f" counted from step {start}" if start and settings["patience"] else ""


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
    after the checkpoint and lost is not counted. Evaluation during training is included.

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

        def seconds(self) -> float:
            end = self.stopped if self.stopped is not None else time.perf_counter()
            return self.previous + (end - self.started if self.started is not None else 0.0)

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.started, self.stopped = time.perf_counter(), None

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.stopped = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.is_world_process_zero:
                checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if checkpoint.is_dir():
                    _write_json(checkpoint / TRAIN_CLOCK_FILE, {"seconds": self.seconds()})

    _TrainClock.__name__ = _TrainClock.__qualname__ = "TrainClock"
    return _TrainClock(previous_seconds or 0.0)


def train_one(
    method: Method, seed: int, features: Any, args: argparse.Namespace, run_dir: Path
) -> dict[str, Any]:
    """Train (or resume) one run, select on validation, evaluate once on test; returns its record."""
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    from hf_cotmi import (
        DSSMITrainer,
        DSSMITrainingArguments,
        build_compute_metrics,
        expected_calibration_error,
        label_confidences,
    )
    from hf_cotmi.calibration import average_confidence

    model, tokenizer = args._student_loader()
    train = features["train"]
    if not method.uses_rationales:
        train = train.remove_columns(["expl_input_ids", "expl_attention_mask", "rationale_labels"])
    training_args = DSSMITrainingArguments(
        output_dir=str(run_dir),
        label_loss_weight=method.label_loss_weight,
        rationale_loss_weight=method.rationale_loss_weight,
        mi_loss_weight=method.mi_loss_weight,
        mi_variant=method.mi_variant,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        optim=args.optim,
        bf16=args.bf16,
        use_cpu=args.bf16 and not torch.cuda.is_available(),  # transformers wants this for bf16 on a CPU
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=1,
        save_only_model=args.save_only_model,
        load_best_model_at_end=True,
        metric_for_best_model="eval_accuracy",
        greater_is_better=True,
        logging_steps=max(1, min(50, args.eval_steps)),
        generation_max_length=args.max_label_length + 1,
        generation_num_beams=args.generation_num_beams,
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    last = get_last_checkpoint(str(run_dir)) if run_dir.exists() else None
    if last and args.save_only_model:
        # model-only checkpoints cannot resume training: start this run again
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
        last = None
    # training time up to the checkpoint resumed from (steps after it are trained again, not counted twice)
    # read now: the checkpoint resumed from may be rotated away during training
    resumed_clock = read_train_seconds(last)
    clock = train_clock_callback(resumed_clock)
    callbacks = [clock]
    if args.patience > 0:
        callbacks.append(early_stopping_callback(args.patience, args.patience_start))
    trainer = DSSMITrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=features["valid"],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer, task=args.task),
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
    start_test = time.perf_counter()
    test = features["test"]
    prediction = trainer.predict(test, metric_key_prefix="test")
    mode, candidates = _calibration_setup(args)
    model = trainer.model.eval()
    with torch.no_grad():
        confidences = label_confidences(
            model,
            tokenizer,
            test,
            mode=mode,
            label_candidates=candidates,
            batch_size=args.eval_batch_size,
            max_length=args.max_label_length + 1,
            num_beams=args.generation_num_beams,
            is_correct=_is_correct(args.task),
        )
    test_seconds = time.perf_counter() - start_test
    examples = [
        {"prediction": p, "confident_prediction": c, "gold": g}
        for p, c, g in zip(
            [r["prediction"] for r in trainer.decode_predictions(prediction.predictions)[:5]],
            confidences.predictions[:5],
            confidences.references[:5],
        )
    ]
    record = {
        "method": method.name,
        "seed": seed,
        "test_accuracy": float(prediction.metrics["test_accuracy"]),
        "test_ece": float(
            expected_calibration_error(confidences.confidences, confidences.correct, n_bins=args.n_bins)
        ),
        "test_avg_confidence": float(average_confidence(confidences.confidences)),
        "test_confidence_accuracy": float(confidences.accuracy),
        "confidence_mode": mode,
        "best_valid_accuracy": float(state.best_metric) if state.best_metric is not None else None,
        "best_step": best_step,
        "steps_trained": int(state.global_step),
        "stopped_early": int(state.global_step) < args.max_steps,
        "valid_history": valid_history,
        "train_loss": float(train_output.training_loss),
        "train_seconds": round(clock.seconds(), 1),
        # False when resumed from a checkpoint without a clock (written by an older replicate.py)
        "train_seconds_complete": not last or resumed_clock is not None,
        "test_seconds": round(test_seconds, 1),
        "resumed": bool(last),
        "test_examples": test.num_rows,
        "first_test_predictions": examples,
    }
    _write_json(run_dir / "done.json", record)
    if not args.keep_checkpoints:
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return record


def run_sweep(args: argparse.Namespace, features: Any, out: Path) -> list[dict[str, Any]]:
    """Run every (seed, method) pair not yet done, seed-major so that a cut sweep has whole seeds."""
    methods = build_methods(args.mi_weight)
    records = []
    total = len(args.seeds) * len(args.methods)
    index = 0
    for seed in args.seeds:
        for name in args.methods:
            index += 1
            run_dir = out / "runs" / name / f"seed{seed}"
            done = run_dir / "done.json"
            if done.exists():
                print(f"[{index}/{total}] {name} seed {seed}: done, skipped", flush=True)
                records.append(json.loads(done.read_text()))
                continue
            print(f"[{index}/{total}] {name} seed {seed}: training", flush=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            record = train_one(methods[name], seed, features, args, run_dir)
            records.append(record)
            print(
                f"[{index}/{total}] {name} seed {seed}: test accuracy {record['test_accuracy']:.4f}, "
                f"ECE {record['test_ece']:.4f}, best step {record['best_step']}/{record['steps_trained']}, "
                f"{record['train_seconds']:.0f} s",
                flush=True,
            )
    return records


def collect_records(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The finished runs in an output folder (for ``--report-only``)."""
    records = []
    for seed in seeds:
        for name in methods:
            done = out / "runs" / name / f"seed{seed}" / "done.json"
            if done.exists():
                records.append(json.loads(done.read_text()))
    return records


# -------------------------------------------------------------------------------------------------- report


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (n - 1) per method of accuracy, ECE and average confidence.

    Example:
        >>> rows = [{"method": "dss", "seed": s, "test_accuracy": a, "test_ece": 0.1, "test_avg_confidence": 0.8,
        ...          "steps_trained": 10, "best_step": 10, "train_seconds": 1.0} for s, a in ((0, 0.5), (1, 0.7))]
        >>> round(summarise(rows, ["dss"])["dss"]["accuracy_std"], 4)
        0.1414
    """
    summary: dict[str, dict[str, Any]] = {}
    titles = {m.name: m.title for m in build_methods().values()}
    for name in methods:
        runs = [r for r in records if r["method"] == name]
        if not runs:
            continue
        entry: dict[str, Any] = {"title": titles.get(name, name), "seeds": sorted(r["seed"] for r in runs)}
        for key, metric in (
            ("accuracy", "test_accuracy"),
            ("ece", "test_ece"),
            ("avg_confidence", "test_avg_confidence"),
        ):
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std([r[metric] for r in runs])
        entry["per_seed_accuracy"] = {str(r["seed"]): r["test_accuracy"] for r in runs}
        entry["steps_trained"] = [r["steps_trained"] for r in runs]
        entry["best_steps"] = [r["best_step"] for r in runs]
        # a run resumed from a checkpoint without a saved clock knows only the time after the resume
        timed = [r["train_seconds"] for r in runs if r.get("train_seconds_complete", not r.get("resumed"))]
        entry["train_minutes_mean"] = sum(timed) / len(timed) / 60 if timed else None
        entry["timed_runs"] = len(timed)
        summary[name] = entry
    return summary


def _train_minutes_text(entry: dict[str, Any]) -> str:
    if entry["train_minutes_mean"] is None:
        return "n/a"
    runs = len(entry["seeds"])
    timed = entry.get("timed_runs", runs)
    text = f"{entry['train_minutes_mean']:.1f}"
    return text if timed == runs else f"{text} ({timed} of {runs} runs timed)"


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    """The results as a markdown table (percentages, mean ± sample std over seeds)."""
    lines = [
        "| method | seeds | test accuracy (%) | ECE (%) | avg confidence (%) | steps run | best step | "
        "train min/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary.values():
        lines.append(
            f"| {entry['title']} | {len(entry['seeds'])} | "
            f"{100 * entry['accuracy_mean']:.2f} ± {100 * entry['accuracy_std']:.2f} | "
            f"{100 * entry['ece_mean']:.2f} ± {100 * entry['ece_std']:.2f} | "
            f"{100 * entry['avg_confidence_mean']:.2f} ± {100 * entry['avg_confidence_std']:.2f} | "
            f"{', '.join(map(str, entry['steps_trained']))} | {', '.join(map(str, entry['best_steps']))} | "
            f"{_train_minutes_text(entry)} |"
        )
    return "\n".join(lines) + "\n"


def plot_accuracy(summary: dict[str, dict[str, Any]], path: Path, title: str) -> bool:
    """Bar chart of test accuracy per method (mean, sample-std error bars, one dot per seed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    names = list(summary)
    means = [100 * summary[n]["accuracy_mean"] for n in names]
    stds = [100 * summary[n]["accuracy_std"] for n in names]
    fig, ax = plt.subplots(figsize=(1.8 * len(names) + 2, 4))
    positions = range(len(names))
    ax.bar(positions, means, yerr=stds, capsize=6, color="#9ecae1", edgecolor="#3182bd")
    for i, name in enumerate(names):
        values = [100 * v for v in summary[name]["per_seed_accuracy"].values()]
        ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
    ax.set_xticks(list(positions))
    ax.set_xticklabels([summary[n]["title"] for n in names], rotation=15)
    ax.set_ylabel("test accuracy (%)")
    low = min(m - s for m, s in zip(means, stds)) if means else 0
    ax.set_ylim(max(0, low - 10), min(100, max(m + s for m, s in zip(means, stds)) + 5) if means else 100)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out: Path, records: list[dict[str, Any]], args: argparse.Namespace, settings: dict) -> dict:
    """Write results.json, results.md and accuracy.png; returns the summary."""
    summary = summarise(records, args.methods)
    expected = len(args.methods) * len(args.seeds)
    result = {
        "protocol": settings,
        "methods": args.methods,
        "seeds": args.seeds,
        "finished_runs": len(records),
        "expected_runs": expected,
        "summary": summary,
        "runs": records,
    }
    _write_json(out / "results.json", result)
    data = settings["data"]
    header = (
        f"Student `{settings['student']}`; {data['dataset']}: {data['train']['examples']} train "
        f"({data['train']['split']}), {data['valid']['examples']} validation ({data['valid']['split']}), "
        f"{data['test']['examples']} test ({data['test']['split']}). Budget {settings['max_steps']} steps, "
        f"batch {settings['batch_size']}x{settings['gradient_accumulation_steps']}, lr {settings['learning_rate']}, "
        f"validation every {settings['eval_steps']} steps, patience {settings['patience']}"
        f"{_patience_start_text(settings)}. "
        f"{len(records)}/{expected} runs finished. Mean ± sample std over seeds; checkpoint selected on "
        "validation accuracy; test touched once per run.\n\n"
    )
    (out / "results.md").write_text(header + markdown_table(summary))
    if summary:
        plot_accuracy(summary, out / "accuracy.png", f"{data['dataset']}: test accuracy over seeds")
    return summary


# ---------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep and write the report; returns the per-method summary."""
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task is None:
        args.task = "equation" if args.dataset == "svamp" else "text"
    out = Path(args.output_dir)
    data, description = load_splits(args)
    settings = protocol(args, description)
    check_protocol(out, settings, args.force)
    if args.report_only:
        records = collect_records(out, args.methods, args.seeds)
    else:
        texts = _texts(data)
        _, tokenizer = load_student(args.student, texts)
        features = tokenise(data, tokenizer, args)

        def student_loader() -> tuple[Any, Any]:
            return load_student(args.student, texts)

        args._student_loader = student_loader
        sweep_start = time.perf_counter()
        records = run_sweep(args, features, out)
        print(f"sweep sitting took {(time.perf_counter() - sweep_start) / 60:.1f} min", flush=True)
    summary = write_report(out, records, args, settings)
    print((out / "results.md").read_text(), flush=True)
    fingerprint = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    print(f"wrote {out / 'results.json'} (protocol {fingerprint})", flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
