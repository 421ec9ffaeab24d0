#!/usr/bin/env python3
"""Training and evaluation throughput of ``DSSMITrainer`` against the original DSS way, same work.

The baseline is what the Distilling Step-by-Step code did (its ``TaskPrefixTrainer``): a plain
``Seq2SeqTrainer`` whose ``compute_loss`` runs the model on the ``pred`` sub-batch and on the ``expl``
sub-batch, each with its own ``labels`` so that the model computes its cross-entropy, and returns
``alpha * pred_loss + (1 - alpha) * expl_loss``. Both trainers get the same model weights, the same
collated batches (``DSSDataCollator``: ``{"pred": ..., "expl": ...}``), the same optimizer, batch size and
seed, and run in this one process, interleaved ``--repeats`` times; medians are reported.

- ``train``: DSS with ``mi_loss_weight=0`` (label 0.5 + rationale 0.5): exactly the same two forward and
  backward passes on both sides.
- ``train_mi``: ``DSSMITrainer`` with the MI term on (``--mi-variant``), against the same baseline: this one
  is not the same work (the baseline has no MI term); it shows what the MI term costs on top of DSS.
- ``eval``: ``evaluate()`` with ``predict_with_generate`` on label-task features: one teacher-forced loss
  pass and greedy generation of the label on both sides, same ``generation_max_length`` and beams.

Examples per second count training examples (each seen by both tasks) and evaluation examples. The last
line printed is JSON with the throughputs and the ratios ``DSSMITrainer / baseline`` (above 1: faster).

    python examples/benchmarks/throughput.py --student runs/student \\
        --dataset esnli --data-dir ../shared/data/dss --train-split valid --steps 30 --repeats 3
    python examples/benchmarks/throughput.py --smoke        # tiny model, synthetic data, a few seconds
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules, however it is loaded
from measurement_record import write_measurement  # noqa: E402


@dataclass
class ThroughputArguments:
    """The options of this script that the package's ``DataArguments`` does not have."""

    student: str = field(default="tiny", metadata={"help": "Hub name, local folder or 'tiny'"})
    batch_size: int = field(default=16, metadata={"help": "training batch size of both trainers"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size"})
    steps: int = field(default=30, metadata={"help": "timed optimizer steps per repeat"})
    warmup_steps: int = field(default=3, metadata={"help": "untimed steps before the clock starts"})
    eval_examples: int = field(default=256, metadata={"help": "evaluation examples"})
    repeats: int = field(default=3, metadata={"help": "interleaved repeats; medians are reported"})
    mi_variant: str = field(default="masked", metadata={"choices": ["paper", "masked"], "help": "MI variant"})
    mi_weight: float = field(default=0.1, metadata={"help": "MI loss weight of the DSS + MI trainer"})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision"})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads"})
    smoke: bool = field(default=False, metadata={"help": "tiny model, synthetic data, few steps"})
    output: str | None = field(
        default=None,
        metadata={"help": "also write the result, raw figures, command and machine to this JSON"},
    )


@dataclass
class Options:
    """The parsed command line: the package's ``DataArguments`` and this script's own options."""

    data: Any
    run: ThroughputArguments

    def __getattr__(self, name: str) -> Any:  # args.steps, args.dataset, ...
        for part in (self.__dict__["run"], self.__dict__["data"]):
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line (see the module docstring) with ``HfArgumentParser``."""
    from transformers import HfArgumentParser

    from hf_cotmi.run_arguments import DataArguments

    parser = HfArgumentParser([DataArguments, ThroughputArguments], description=__doc__.split("\n\n")[0])
    parser.set_defaults(
        dataset="synthetic",
        eval_split="test",
        max_input_length=128,
        max_label_length=16,
        max_rationale_length=64,
    )
    data, run = parser.parse_args_into_dataclasses(list(sys.argv[1:] if argv is None else argv))
    if run.smoke:
        run.steps, run.warmup_steps, run.eval_examples, run.repeats = 3, 1, 32, 1
        run.batch_size = min(run.batch_size, 8)
    if data.dataset != "synthetic" and data.data_dir is None:
        parser.error("--dataset needs --data-dir")
    return Options(data, run)


def timed_data(args: Options) -> tuple[Any, Any]:
    """Training and evaluation text sets (training: enough examples for warmup + timed steps), loaded with
    :func:`hf_cotmi.pipeline.load_task_data`."""
    from hf_cotmi.pipeline import load_task_data

    n_train = args.batch_size * (args.warmup_steps + args.steps)
    data_args = replace(args.data, synthetic_train_size=n_train, synthetic_test_size=args.eval_examples)
    if data_args.eval_split == data_args.test_split:
        data_args = replace(data_args, test_split="")  # the evaluation split is what is timed
    splits = load_task_data(data_args).splits
    if "eval" not in splits:
        raise SystemExit(f"throughput.py: error: no evaluation split {data_args.eval_split!r} in the data")
    train = splits["train"].shuffle(seed=0).select(range(min(n_train, splits["train"].num_rows)))
    evaluation = splits["eval"].select(range(min(args.eval_examples, splits["eval"].num_rows)))
    return train, evaluation


def make_student(name: str, texts: Sequence[str]) -> tuple[Any, Any]:
    """:func:`hf_cotmi.students.load_student`: a folder or Hub name, or the built-in tiny T5 for ``tiny``."""
    from hf_cotmi.data.synthetic import arithmetic_vocabulary
    from hf_cotmi.run_arguments import ModelArguments
    from hf_cotmi.students import load_student as package_load_student

    args = ModelArguments(model_name_or_path=None if name == "tiny" else name, tiny_d_model=32)
    model, tokenizer, _ = package_load_student(args, texts, extra_vocabulary=arithmetic_vocabulary())
    return model, tokenizer


def make_original_trainer_class() -> type:
    """The original DSS ``TaskPrefixTrainer`` (training part): two passes, each with the model's own loss."""
    from transformers import Seq2SeqTrainer

    class TaskPrefixTrainer(Seq2SeqTrainer):
        """``Seq2SeqTrainer`` running the ``pred`` and ``expl`` sub-batches as the DSS release did."""

        alpha: float = 0.5

        def compute_loss(
            self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if "pred" not in inputs:  # prediction_step's loss on the label task: the model's own loss
                outputs = model(**inputs)
                return (outputs.loss, outputs) if return_outputs else outputs.loss
            pred_outputs = model(**inputs["pred"])
            expl_outputs = model(**inputs["expl"])
            loss = self.alpha * pred_outputs.loss + (1.0 - self.alpha) * expl_outputs.loss
            return (loss, {"pred": pred_outputs, "rationale": expl_outputs}) if return_outputs else loss

        def prediction_step(
            self,
            model: Any,
            inputs: dict,
            prediction_loss_only: bool,
            ignore_keys: Any = None,
            **gen_kwargs: Any,
        ) -> Any:
            # DSS with output_rationale=False: loss and generation on the label task only
            return super().prediction_step(
                model, inputs["pred"], prediction_loss_only, ignore_keys, **gen_kwargs
            )

        def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> Any:
            return None  # the model's own mean losses, as in the original code

    return TaskPrefixTrainer


class _Clock:
    """A ``TrainerCallback`` that times the optimizer steps after ``warmup`` untimed ones."""

    def __init__(self, warmup: int) -> None:
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step == warmup:
                    _sync()
                    clock.start = time.perf_counter()

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                _sync()
                clock.end = time.perf_counter()

        self.callback = Callback()
        self.start = self.end = 0.0


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(args: Options) -> dict[str, Any]:
    """Run the interleaved measurements; returns medians and ratios."""
    import torch
    from transformers import Seq2SeqTrainingArguments

    from hf_cotmi import DSSDataCollator, DSSMITrainer, DSSMITrainingArguments, prepare_dss_features

    train_text, eval_text = timed_data(args)
    texts = [
        t for split in (train_text, eval_text) for c in ("input", "label", "rationale") for t in split[c]
    ]
    model, tokenizer = make_student(args.student, texts)
    initial_state = copy.deepcopy(model.state_dict())
    lengths = dict(
        max_input_length=args.max_input_length,
        max_label_length=args.max_label_length,
        max_rationale_length=args.max_rationale_length,
    )
    train = prepare_dss_features(train_text, tokenizer, **lengths)
    evaluation = prepare_dss_features(eval_text, tokenizer, with_rationale=False, **lengths)
    original_cls = make_original_trainer_class()
    workdir = tempfile.mkdtemp(prefix="throughput-")
    common = dict(
        output_dir=workdir,
        max_steps=args.warmup_steps + args.steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=5e-5,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        predict_with_generate=True,
        generation_max_length=args.max_label_length + 1,
        generation_num_beams=1,
        seed=0,
        dataloader_num_workers=0,
        bf16=args.bf16,
    )

    def build(kind: str) -> Any:
        model.load_state_dict(initial_state)
        clock = _Clock(args.warmup_steps)
        collator = DSSDataCollator(tokenizer, model=model)
        if kind == "original":
            cls, training_args = original_cls, Seq2SeqTrainingArguments(**common)
        else:
            mi = args.mi_weight if kind == "dssmi_mi" else 0.0
            cls = DSSMITrainer
            training_args = DSSMITrainingArguments(**common, mi_loss_weight=mi, mi_variant=args.mi_variant)
        trainer = cls(
            model=model,
            args=training_args,
            data_collator=collator,
            train_dataset=train,
            processing_class=tokenizer,
            callbacks=[clock.callback],
        )
        return trainer, clock

    timed_examples = args.steps * args.batch_size
    results: dict[str, list[float]] = {
        f"{phase}_{kind}": [] for phase in ("train", "eval") for kind in ("dssmi", "original")
    }
    results["train_dssmi_mi"] = []
    for repeat in range(args.repeats):
        order = ("original", "dssmi", "dssmi_mi") if repeat % 2 == 0 else ("dssmi_mi", "dssmi", "original")
        for kind in order:
            trainer, clock = build(kind)
            trainer.train()
            results[f"train_{kind}"].append(timed_examples / (clock.end - clock.start))
            if kind != "dssmi_mi":
                if repeat == 0:  # an untimed evaluation first, on both sides: the process's first
                    with torch.no_grad():  # generate() pays set-up costs that are not the trainer's
                        trainer.evaluate(evaluation.select(range(min(8, evaluation.num_rows))))
                _sync()
                start = time.perf_counter()
                with torch.no_grad():
                    trainer.evaluate(evaluation)
                _sync()
                results[f"eval_{kind}"].append(evaluation.num_rows / (time.perf_counter() - start))
            print(
                f"repeat {repeat + 1}/{args.repeats} {kind:9s}: train {results[f'train_{kind}'][-1]:.1f} ex/s"
                + (f", eval {results[f'eval_{kind}'][-1]:.1f} ex/s" if kind != "dssmi_mi" else ""),
                flush=True,
            )
            del trainer
    medians = {key: statistics.median(values) for key, values in results.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "device": torch.cuda.get_device_name(0)
        if device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "student": args.student,
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "eval_examples": evaluation.num_rows,
        "train_examples_per_s": {
            "dssmi_dss": medians["train_dssmi"],
            "dssmi_dss_mi": medians["train_dssmi_mi"],
            "original_dss": medians["train_original"],
        },
        "eval_examples_per_s": {"dssmi": medians["eval_dssmi"], "original": medians["eval_original"]},
        "train_ratio": medians["train_dssmi"] / medians["train_original"],
        "train_ratio_with_mi": medians["train_dssmi_mi"] / medians["train_original"],
        "eval_ratio": medians["eval_dssmi"] / medians["eval_original"],
        "all": results,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure and print the summary; the last line is JSON."""
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(
        f"train: DSSMITrainer (DSS) {result['train_examples_per_s']['dssmi_dss']:.1f} ex/s, "
        f"(DSS + MI) {result['train_examples_per_s']['dssmi_dss_mi']:.1f} ex/s, "
        f"original DSS {result['train_examples_per_s']['original_dss']:.1f} ex/s"
    )
    print(
        f"eval:  DSSMITrainer {result['eval_examples_per_s']['dssmi']:.1f} ex/s, "
        f"original DSS {result['eval_examples_per_s']['original']:.1f} ex/s"
    )
    print(json.dumps({k: v for k, v in result.items() if k != "all"}, sort_keys=True))
    if args.output:
        given = sys.argv[1:] if argv is None else list(argv)
        summary = {k: v for k, v in result.items() if k != "all"}
        write_measurement(
            args.output, summary, script="throughput.py", argv=given, details={"all": result["all"]}
        )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
