"""``hf-cotmi demo``: DSS + MI end to end, offline, on a CPU (``hf-cotmi demo --help`` says how long it takes).

By default the demo generates the synthetic multi-step arithmetic task (:mod:`hf_cotmi.data.synthetic`),
builds a small T5 from a config and a word-level tokenizer in code, trains it with Distilling
Step-by-Step plus the mutual-information loss, evaluates accuracy and calibration (ECE) on held-out
problems, prints a few of them with the generated rationale and label, and saves the model, tokenizer,
model card, reliability diagram and training curve. ``model_name_or_path`` and ``dataset``/``data_dir`` switch it to a
real student and real data; any :class:`~hf_cotmi.DSSMITrainingArguments` field can be overridden.

Examples:
    >>> from hf_cotmi.demo import demo_defaults
    >>> demo_defaults()["max_steps"], demo_defaults(real_model=True)["learning_rate"]
    (600, 0.0005)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .pipeline import _silent, quiet_libraries, run_training
from .run_arguments import DataArguments, EvaluationArguments, ModelArguments
from .tasks import SYNTHETIC_TASK

__all__ = [
    "TRAINING_CURVE",
    "DemoArguments",
    "demo_defaults",
    "demo_help_description",
    "run_demo",
    "execute_demo",
]

TRAINING_CURVE = "training_curve.png"
"""The training-curve PNG the demo saves into its output folder (loss and its components over steps)."""

_DURATION = "about 70 seconds on two CPU cores"
"""How long the default demo takes from command to exit, as measured (docs/cli.md gives the runs): what
``hf-cotmi demo --help`` says, and the documentation with it."""

# The tuned default: a 170k-parameter T5 (d_model 64, 2+2 layers) on 4000 generated problems, 600 steps of
# 64 examples: about 60 CPU-seconds of training on one thread.
_SYNTHETIC_TINY: dict[str, Any] = {
    "output_dir": "demo-out",
    "dataset": SYNTHETIC_TASK,
    "max_steps": 600,
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 100,
    "learning_rate": 5e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0.05,
    "weight_decay": 0.0,
    "logging_steps": 100,
    "save_strategy": "no",
    "disable_tqdm": True,
    "dataloader_pin_memory": False,
    "report_to": "none",
    "seed": 0,
    "generation_max_length": 8,
    "rationale_max_new_tokens": 32,
    "max_input_length": 64,
    "max_label_length": 8,
    "max_rationale_length": 48,
    "num_examples_to_show": 5,
}
# --student-type causal: an 85k-parameter Llama (hidden 64, 2 layers) built from a config. Its one sequence
# per task (prompt + target) costs more per step than the T5, so fewer steps at a higher learning rate
# (measured figures in docs/cli.md).
_CAUSAL_TINY: dict[str, Any] = {"max_steps": 400, "learning_rate": 1e-2}
# A pretrained student needs a smaller learning rate, and its subword tokenizer longer limits.
_REAL_MODEL: dict[str, Any] = {
    "learning_rate": 5e-4,
    "generation_max_length": 16,
    "rationale_max_new_tokens": 64,
    "max_input_length": 128,
    "max_label_length": 16,
    "max_rationale_length": 96,
}
# Real data: DSS-sized limits and batches.
_REAL_DATA: dict[str, Any] = {
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "logging_steps": 50,
    "generation_max_length": 64,
    "rationale_max_new_tokens": 128,
    "max_input_length": 512,
    "max_label_length": 64,
    "max_rationale_length": 256,
    "num_examples_to_show": 3,
}
# --smoke: a run of a few seconds that still saves everything (CI checks an installed wheel with it).
_SMOKE: dict[str, Any] = {
    "max_steps": 20,
    "logging_steps": 5,
    "synthetic_train_size": 256,
    "synthetic_test_size": 20,
    "max_train_samples": 256,
    "max_test_samples": 20,
    "max_eval_samples": 20,
    "num_examples_to_show": 2,
}


@dataclass
class DemoArguments:
    """Options that only the demo has.

    Examples:
        >>> DemoArguments().num_threads
        1
    """

    num_threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads (0 keeps torch's default). The built-in small T5 runs fastest on "
                  "one thread, and more threads can crawl on a busy machine."},
    )  # fmt: skip
    smoke: bool = field(
        default=False,
        metadata={"help": "A run of a few seconds (20 steps on a few hundred examples) that still saves the "
                  "model, tokenizer, model card, reliability diagram and training curve: a check, not a result."},
    )  # fmt: skip


def demo_help_description() -> str:
    """The description ``hf-cotmi demo --help`` shows: what the demo does, how long it takes
    (:data:`_DURATION`), and the defaults of ``--student-type causal``, which the option list (showing the
    T5's) does not.

    Returns:
        One paragraph of text.

    Examples:
        >>> "--student-type causal" in demo_help_description() and _DURATION in demo_help_description()
        True
    """
    t5, causal = _SYNTHETIC_TINY, {**_SYNTHETIC_TINY, **_CAUSAL_TINY}
    return (
        "Train a small T5 built in code on a generated multi-step arithmetic task with DSS + MI (offline, "
        f"{_DURATION}), evaluate, show examples and save everything. --model and --dataset/--data-dir switch "
        "to a real student and real data; --student-type causal trains a small decoder-only (Llama) student "
        f"instead, whose defaults are {causal['max_steps']} steps at learning rate {causal['learning_rate']:g} "
        f"(the defaults shown below are the T5's: {t5['max_steps']} steps at {t5['learning_rate']:g})."
    )


def demo_defaults(
    *, real_model: bool = False, real_data: bool = False, smoke: bool = False, causal: bool = False
) -> dict[str, Any]:
    """The demo's default option values (field names of the argument dataclasses).

    Args:
        real_model: a pretrained student is given (``model_name_or_path``): smaller learning rate, longer
            limits for its subword tokenizer.
        real_data: a DSS dataset or your own files are given: DSS-sized limits and batches.
        smoke: ``--smoke``: few steps on little data.
        causal: ``--student-type causal`` without a model: the built-in decoder-only (Llama) student's size
            and learning rate.

    Examples:
        >>> demo_defaults(real_data=True)["max_input_length"]
        512
    """
    values = dict(_SYNTHETIC_TINY)
    if causal and not real_model:
        values.update(_CAUSAL_TINY)
    if real_model:
        values.update(_REAL_MODEL)
    if real_data:
        values.update(_REAL_DATA)
        values.pop("dataset")
    if smoke:
        values.update(_SMOKE)
    return values


def _split_options(options: dict[str, Any]) -> tuple[Any, ...]:
    from .arguments import DSSMITrainingArguments

    classes = (ModelArguments, DataArguments, EvaluationArguments, DemoArguments, DSSMITrainingArguments)
    names = [{f.name for f in dataclasses.fields(c) if f.init} for c in classes]
    unknown = sorted(set(options) - set().union(*names))
    if unknown:
        raise TypeError(
            f"unknown demo option(s) {unknown}; expected field names of {[c.__name__ for c in classes]}"
        )
    return tuple(c(**{k: v for k, v in options.items() if k in n}) for c, n in zip(classes, names))


def execute_demo(
    model_args: ModelArguments,
    data_args: DataArguments,
    eval_args: EvaluationArguments,
    training_args: Any,
    demo_args: DemoArguments,
    *,
    print_fn: Callable[[str], None] = print,
    debug: bool = False,
) -> dict[str, Any]:
    """Run the demo with fully resolved arguments (what ``hf-cotmi demo`` calls after parsing).

    Library warnings and progress bars are silenced while it runs (``debug=True`` keeps them), and torch's
    thread count is restored afterwards.

    Returns:
        :func:`hf_cotmi.pipeline.run_training`'s result plus ``"training_curve"`` and ``"total_seconds"``.

    Examples:
        >>> # execute_demo(*arguments)  # see run_demo for the keyword form
    """
    import torch

    started = time.monotonic()
    if training_args.process_index != 0:  # the main process reports (torchrun, accelerate launch)
        print_fn = _silent
    threads = torch.get_num_threads()
    if demo_args.num_threads > 0:
        torch.set_num_threads(demo_args.num_threads)
    _log_often_enough(training_args)
    synthetic_tiny = data_args.dataset == SYNTHETIC_TASK and not model_args.model_name_or_path
    title = "hf-cotmi demo: Distilling Step-by-Step + mutual-information loss"
    if synthetic_tiny:
        title += " on generated multi-step arithmetic word problems (offline)"
    try:
        with quiet_libraries(not debug):
            results = run_training(
                model_args,
                data_args,
                eval_args,
                training_args,
                title=title,
                print_fn=print_fn,
            )
    finally:
        torch.set_num_threads(threads)
    trainer = results["trainer"]
    curve = "not drawn (the main process draws it)"
    if trainer.is_world_process_zero():
        try:
            curve = results["training_curve"] = _save_curve(trainer, title)
        except ValueError as error:  # nothing logged: say so rather than fail a finished run
            curve = f"not drawn ({error})"
        results["files"] = sorted(os.listdir(training_args.output_dir))
    total = time.monotonic() - started
    results["total_seconds"] = round(total, 1)
    files = ", ".join(results["files"])
    print_fn(f"files in {training_args.output_dir}/: {files}")
    print_fn(f"reliability diagram: {results['reliability_diagram'] or 'not drawn (no test split)'}")
    print_fn(f"training curve: {curve}")
    print_fn(f"demo finished in {int(total // 60)}m{int(total % 60):02d}s")
    return results


def _log_often_enough(training_args: Any) -> None:
    """A short run (``--max-steps`` below ``--logging-steps``) still logs a few points for the curve."""
    steps, every = training_args.max_steps, training_args.logging_steps
    if steps > 0 and every >= 1 and every > steps:
        training_args.logging_steps = max(1, steps // 4)


def _save_curve(trainer: Any, title: str) -> str:
    from .plotting import save_training_curve

    path = os.path.join(trainer.args.output_dir, TRAINING_CURVE)
    return save_training_curve(trainer.state.log_history, path, title=title.split(":")[0] + ": training loss")


def run_demo(
    output_dir: str = "demo-out", *, print_fn: Callable[[str], None] = print, **options: Any
) -> dict[str, Any]:
    """Run the demo from Python; ``options`` are flag names with underscores (``max_steps=200``, ...).

    The defaults are :func:`demo_defaults`, adapted when ``model_name_or_path`` or real data
    (``dataset`` other than ``"synthetic"``, or ``train_file``) is given.

    Args:
        output_dir: where the model, tokenizer, model card and reliability diagram go.
        print_fn: where progress goes.
        **options: fields of :class:`~hf_cotmi.run_arguments.ModelArguments`,
            :class:`~hf_cotmi.run_arguments.DataArguments`, :class:`~hf_cotmi.run_arguments.EvaluationArguments`,
            :class:`DemoArguments` or :class:`~hf_cotmi.DSSMITrainingArguments`.

    Returns:
        ``{"metrics": {"test_accuracy": ..., "test_ece": ...}, "majority_baseline": ..., "examples": [...],
        "files": [...], "total_seconds": ..., "trainer": DSSMITrainer}``.

    Raises:
        TypeError: an option that no argument class has.

    Examples:
        >>> # results = run_demo("demo-out", max_steps=100)
        >>> # results["metrics"]["test_accuracy"]
    """
    real_model = bool(options.get("model_name_or_path"))
    dataset = options.get("dataset")
    real_data = bool(options.get("train_file") or options.get("test_file")) or (
        dataset is not None and dataset != SYNTHETIC_TASK
    )
    values = demo_defaults(
        real_model=real_model,
        real_data=real_data,
        smoke=bool(options.get("smoke")),
        causal=options.get("student_type") == "causal",
    )
    values.update(options)
    values["output_dir"] = output_dir
    model_args, data_args, eval_args, demo_args, training_args = _split_options(values)
    return execute_demo(model_args, data_args, eval_args, training_args, demo_args, print_fn=print_fn)
