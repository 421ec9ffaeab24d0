"""The ``hf-cotmi`` command: ``train``, ``evaluate``, ``predict``, ``demo`` and ``generate-rationales``.

Every subcommand parses through :mod:`hf_cotmi.command_line` (``transformers.HfArgumentParser``):
``train`` and ``demo`` accept every :class:`~hf_cotmi.DSSMITrainingArguments` field as a flag
(``--learning-rate``, ``--mi-loss-weight``, ``--push-to-hub``, ...) beside the model, data and evaluation
options, and ``--config file.yaml`` sets any of them from a file (flags given on the command line win).
Errors print one line and exit non-zero (2 for a usage error, naming the flag or the config file and key);
``--debug`` shows the traceback.

Examples:
    >>> from hf_cotmi.cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    hf-cotmi ...
    0
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .command_line import CommonArguments, build_argument_parser, parse_command_line
from .confidence import CONFIDENCE_MODES
from .data.textfiles import InputRecord
from .pipeline import (
    check_confidence_options,
    quiet_libraries,
    recorded_input_column,
    run_evaluation,
    run_prediction,
    run_training,
    shown_text,
    write_json,
)
from .prediction_inputs import input_records
from .run_arguments import (
    COLUMN_FIELDS,
    CLIUsageError,
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    plural,
)
from .teacher.command import build_generate_rationales_parser, generate_rationales_command

__all__ = [
    "main",
    "CommonArguments",
    "EvaluateArguments",
    "PredictArguments",
    "build_parser",
    "demo_arguments",
    "train_arguments",
    "accelerator_available",
    "end_distributed_run",
    "launched_process",
]

PROG = "hf-cotmi"

_OVERVIEW = f"""usage: {PROG} <command> [options]

Chain-of-thought distillation for seq2seq and decoder-only students: Distilling
Step-by-Step plus the mutual-information loss.

commands:
  demo       train a small T5 (or Llama: --student-type causal) offline on a generated arithmetic
             task, evaluate, save (start here)
  train      train any seq2seq or decoder-only student on a DSS dataset or your own data, evaluate, save, push
  evaluate   accuracy, ECE and average confidence of a saved student on a split
  predict    label, rationale and confidence of a saved student for your texts
  generate-rationales  a teacher's chain-of-thought rationales for your inputs, as a training file

Run '{PROG} <command> --help' for the options of a command. Every command takes
--config FILE.yaml (option values) and --debug (tracebacks).
"""


_BASE_MODEL_HELP = (
    "LoRA adapters (--model): load them onto this base model, a Hub name or a local folder, instead of the one "
    "their adapter_config.json names (base_model_name_or_path; for a run started from a local folder, that "
    "folder's path on the machine it ran on). The tokenizer is the adapters' own, else this model's. Refused "
    "for a full model."
)
"""The help of ``--base-model``, an option of ``evaluate`` and ``predict``."""


@dataclass
class EvaluateArguments:
    """Options of ``hf-cotmi evaluate``.

    Examples:
        >>> EvaluateArguments(model_name_or_path="demo-out").split
        'test'
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"aliases": ["--model"], "help": "Folder of a trained student (or a Hub name)."},
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"aliases": ["--base-model"], "help": _BASE_MODEL_HELP}
    )
    split: str = field(
        default="test",
        metadata={
            "help": "Split to evaluate: train, valid (or validation) or test.",
            "choices": ["train", "valid", "validation", "test"],
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Examples per forward pass."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Longest generated label (default: what training used)."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Also write the metrics to this JSON file."}
    )
    plot_file: str | None = field(
        default=None,
        metadata={
            "help": "Where the reliability diagram PNG goes (default: reliability_diagram_<split>.png "
            "in the model folder, or here for a Hub name)."
        },  # fmt: skip
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, ... (default: CUDA when available)."}
    )
    disable_tqdm: bool = field(
        default=False,
        metadata={
            "help": "Hide the progress bar over the examples being scored (as train's --disable-tqdm)."
        },
    )


@dataclass
class PredictArguments:
    """Options of ``hf-cotmi predict`` (the texts are positional arguments, ``--jsonl`` a plain switch).

    Examples:
        >>> PredictArguments(model_name_or_path="demo-out").batch_size
        16
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"aliases": ["--model"], "help": "Folder of a trained student (or a Hub name)."},
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"aliases": ["--base-model"], "help": _BASE_MODEL_HELP}
    )
    input_file: str | None = field(
        default=None,
        metadata={"help": "Read inputs from this file: one text per line, or JSON Lines with an 'input' field "
                  "(or the --input-column the run was trained with) and a multiple-choice question's 'choices' "
                  "list. '-' reads standard input."},
    )  # fmt: skip
    output_file: str | None = field(
        default=None, metadata={"help": "Also write the predictions as JSON Lines."}
    )
    confidence: str | None = field(
        default=None,
        metadata={"help": "sequence (probability of the generated label), first_token, or candidates "
                  "(with --label-candidates, or each question's own choices: a JSON Lines 'choices' list or "
                  "'Answer Choices:' lines in its text).", "choices": list(CONFIDENCE_MODES)},
    )  # fmt: skip
    label_candidates: str | None = field(
        default=None, metadata={"help": "Comma-separated labels to choose from (candidates confidence)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Texts per forward pass."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Longest generated label."})
    rationale_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Longest generated rationale."}
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, ... (default: CUDA when available)."}
    )


def _training_arguments_class() -> type:
    from .arguments import DSSMITrainingArguments

    return DSSMITrainingArguments


_DESCRIPTIONS = {
    "train": "Train a seq2seq or decoder-only student with Distilling Step-by-Step plus the MI loss, then "
    "evaluate accuracy and calibration on the test split, save model, tokenizer and model card, and optionally "
    "push to the Hub. Without --model the student is a small T5 built from a config (a small Llama with "
    "--student-type causal), sized by the --tiny-* options, with a word-level tokenizer over the training texts.",
    "evaluate": "Accuracy, expected calibration error and average confidence of a saved student.",
    "predict": "Label, rationale and confidence of a saved student for each input text.",
}


def _description(command: str) -> str:
    """What ``--help`` says a command does (the demo's from ``hf_cotmi.demo``, where its defaults are)."""
    if command == "demo":
        from .demo import demo_help_description

        return demo_help_description()
    return _DESCRIPTIONS[command]


def _dataclasses_for(command: str) -> list[type]:
    if command == "train":
        return [
            ModelArguments,
            DataArguments,
            EvaluationArguments,
            _training_arguments_class(),
            CommonArguments,
        ]
    if command == "demo":
        from .demo import DemoArguments

        return [
            ModelArguments,
            DataArguments,
            EvaluationArguments,
            _training_arguments_class(),
            DemoArguments,
            CommonArguments,
        ]
    if command == "evaluate":
        return [EvaluateArguments, DataArguments, EvaluationArguments, CommonArguments]
    if command == "predict":
        return [PredictArguments, CommonArguments]
    raise CLIUsageError(f"unknown command {command!r}; expected one of {', '.join(_COMMANDS)}")


def build_parser(command: str) -> Any:
    """The ``HfArgumentParser`` of one subcommand (``train``, ``evaluate``, ``predict``, ``demo`` or
    ``generate-rationales``).

    Examples:
        >>> parser = build_parser("train")
        >>> "--mi-loss-weight" in parser.format_help() and "--use-peft" in parser.format_help()
        True
    """
    if command == "generate-rationales":
        return build_generate_rationales_parser(f"{PROG} {command}")
    parser = build_argument_parser(
        _dataclasses_for(command),
        prog=f"{PROG} {command}",
        description=_description(command),
        epilog="--debug (a bare flag) shows the traceback of an error and library logging.",
    )
    if command == "predict":
        parser.add_argument("texts", nargs="*", help="Input texts (or use --input-file).")
        # a plain switch: a bool field would take the next text as its value
        parser.add_argument("--jsonl", action="store_true", help="Print JSON Lines instead of readable text.")
    return parser


def _parse(command: str, argv: Sequence[str], defaults: dict[str, Any] | None = None) -> tuple[Any, ...]:
    return parse_command_line(build_parser(command), argv, defaults)


_UNSET = "\0unset"


def _data_options_given(command: str, argv: Sequence[str], names: Sequence[str]) -> set[str]:
    """The string ``DataArguments`` options among ``names`` the command line or ``--config`` sets, even to
    their default value: parsed again with a marker as their default, the ones that lose it were given."""
    data_args = next(
        values
        for values in _parse(command, argv, {name: _UNSET for name in names})
        if isinstance(values, DataArguments)
    )
    return {name for name in names if getattr(data_args, name) != _UNSET}


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if debug:
        import transformers

        logging.getLogger("hf_cotmi").setLevel(logging.INFO)
        transformers.logging.set_verbosity_info()


# ---------------------------------------------------------------------------------------------- commands


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU, ...), the device pinned memory serves.

    Examples:
        >>> isinstance(accelerator_available(), bool)
        True
    """
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def train_arguments(argv: Sequence[str]) -> tuple[Any, ...]:
    """Parse ``hf-cotmi train`` options. Without an accelerator ``dataloader_pin_memory`` defaults to False
    (pinned memory needs one; torch warns on every data loader otherwise); a value given on the command line
    or in ``--config`` wins, as with any default.

    Returns:
        ``(ModelArguments, DataArguments, EvaluationArguments, DSSMITrainingArguments, CommonArguments)``.

    Examples:
        >>> arguments = train_arguments(["--dataset", "synthetic", "--dataloader-pin-memory", "true"])
        >>> arguments[3].dataloader_pin_memory
        True
    """
    defaults = {} if accelerator_available() else {"dataloader_pin_memory": False}
    return _parse("train", argv, defaults)


def _train(argv: Sequence[str], debug: bool = False) -> int:
    model_args, data_args, eval_args, training_args, common = train_arguments(argv)
    check_confidence_options(eval_args.confidence, eval_args.label_candidates)
    _setup_logging(debug)
    title = f"{PROG} train"
    if not model_args.model_name_or_path:
        built = "Llama" if model_args.student_type == "causal" else "T5"
        title += (
            f": no --model given, so the student is a small {built} built from a config (--tiny-* options)"
        )
        if training_args.learning_rate == type(training_args).__dataclass_fields__["learning_rate"].default:
            # 5e-5 suits a pre-trained student; one trained from scratch hardly moves at it
            title += (
                f"\n{PROG} train: note: --learning-rate {training_args.learning_rate:g} is the default for a "
                "pre-trained student; a small one built from a config learns in a few hundred steps at about 5e-3"
            )
    run_training(model_args, data_args, eval_args, training_args, title=title)
    return 0


def demo_arguments(argv: Sequence[str]) -> tuple[Any, ...]:
    """Parse ``hf-cotmi demo`` options with the demo's defaults, adapted to a real model or real data.

    Returns:
        ``(ModelArguments, DataArguments, EvaluationArguments, DSSMITrainingArguments, DemoArguments,
        CommonArguments)``.

    Examples:
        >>> arguments = demo_arguments(["--max-steps", "10"])
        >>> arguments[3].max_steps, arguments[3].learning_rate, arguments[1].dataset
        (10, 0.005, 'synthetic')
    """
    from .demo import demo_defaults
    from .tasks import SYNTHETIC_TASK

    # First pass: is a real model or real data asked for, or a smoke run? That changes the defaults.
    model_args, data_args, _, _, demo_args, _ = _parse("demo", argv, demo_defaults())
    real_data = bool(data_args.train_file or data_args.test_file) or data_args.dataset not in (
        None,
        SYNTHETIC_TASK,
    )
    defaults = demo_defaults(
        real_model=bool(model_args.model_name_or_path),
        real_data=real_data,
        smoke=demo_args.smoke,
        causal=model_args.student_type == "causal",
    )
    return _parse("demo", argv, defaults)


def _demo(argv: Sequence[str], debug: bool = False) -> int:
    from .demo import execute_demo

    model_args, data_args, eval_args, training_args, demo_args, _ = demo_arguments(argv)
    check_confidence_options(eval_args.confidence, eval_args.label_candidates)
    _setup_logging(debug)
    execute_demo(model_args, data_args, eval_args, training_args, demo_args, debug=debug)
    return 0


def launched_process() -> tuple[int, int]:
    """``(rank, number of processes)`` that ``torchrun`` or ``accelerate launch`` gave this process, from
    ``RANK`` and ``WORLD_SIZE``; ``(0, 1)`` for a process started on its own.

    Examples:
        >>> launched_process()  # started on its own, not by a launcher
        (0, 1)
    """
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if not (rank.isdigit() and world.isdigit()):
        return 0, 1
    return int(rank), max(1, int(world))


def _left_to_the_main_process(command: str) -> bool:
    """``evaluate`` and ``predict`` run in one process. Under a launcher of several processes the main one
    does the work and says so (on stderr: ``predict --jsonl`` output stays JSON Lines); the others return
    at once, so the report is printed and its files written once, not by every process at the same time."""
    rank, world = launched_process()
    if world <= 1:
        return False
    if rank == 0:
        print(
            f"{PROG} {command}: note: runs in one process; of the {world} processes the launcher started "
            "(WORLD_SIZE), the main one does the work and the others stop",
            file=sys.stderr,
        )
        return False
    return True


def _evaluate(argv: Sequence[str], debug: bool = False) -> int:
    if _left_to_the_main_process("evaluate"):
        return 0
    args, data_args, eval_args, common = _parse("evaluate", argv)
    check_confidence_options(eval_args.confidence, eval_args.label_candidates)
    _setup_logging(debug)
    if not args.model_name_or_path:
        raise CLIUsageError("--model is required: the folder a training run saved (e.g. demo-out)")
    _prepare_output_file(args.output_file)
    with quiet_libraries(not debug):
        report = run_evaluation(
            args.model_name_or_path,
            data_args,
            eval_args,
            split=args.split,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            plot_file=args.plot_file,
            device=args.device,
            explicit_options=_data_options_given("evaluate", argv, COLUMN_FIELDS),
            disable_tqdm=args.disable_tqdm,
            base_model=args.base_model_name_or_path,
        )
    print(
        f"{report['dataset'] or 'your files'} {report['split']} ({plural(report['num_examples'], 'example')}, "
        f"{report['confidence_mode']} confidence, {report['n_bins']} bins):"
    )
    if "run_max_samples" in report:  # a cut smaller than the split
        print(
            f"  (the first {plural(report['run_max_samples'], 'example')} of {report['split_examples']}, as the "
            f"training run evaluated {'it' if report['run_max_samples'] == 1 else 'them'}; "
            "--max-test-samples N evaluates more)"
        )
    print(f"  accuracy        {report['accuracy']:.4f}")
    if "generated_accuracy" in report:
        print(
            f"  (candidates: accuracy and ECE are the most likely choice's; the generated label's accuracy is "
            f"{report['generated_accuracy']:.4f})"
        )
    print(f"  ece             {report['ece']:.4f}")
    print(f"  avg_confidence  {report['avg_confidence']:.4f}")
    print(f"  reliability diagram: {report['reliability_diagram']}")
    if args.output_file:
        write_json(args.output_file, report, default=float)  # strict JSON: NaN as null
        print(f"  metrics written to {args.output_file}")
    return 0


def _prepare_output_file(path: str | None) -> None:
    """Check ``--output-file`` before any work (a folder is refused) and create its parent folders."""
    if not path:
        return
    if os.path.isdir(path):
        raise CLIUsageError(f"--output-file {path!r} is a folder; give a file name inside it")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)


def _is_parquet(path: str) -> bool:
    """Whether the file is Parquet: by its name, or by its layout whatever its name (``x.pq``, ``x``): it
    starts with ``PAR1`` and ends with the footer's length (4 bytes, little-endian) and ``PAR1``, the footer
    fitting between the leading ``PAR1`` and its length (at most size - 12 bytes, as in a file without
    columns). A text that starts, or even starts and ends, with ``PAR1`` is not one."""
    if path.lower().endswith(".parquet"):
        return True
    with open(path, "rb") as handle:
        if handle.read(4) != b"PAR1":
            return False
        size = handle.seek(0, os.SEEK_END)
        if size < 12:
            return False
        handle.seek(-8, os.SEEK_END)
        tail = handle.read(8)
    footer = int.from_bytes(tail[:4], "little")
    return tail[4:] == b"PAR1" and 0 < footer <= size - 12


def _read_inputs(path: str, input_field: str = "input") -> list[InputRecord]:
    from .data.jsonfiles import DataFormatError
    from .data.textfiles import read_input_records

    if path != "-" and not os.path.isfile(path):
        raise CLIUsageError(f"--input-file {path!r} does not exist or is not a file")
    if path != "-" and _is_parquet(path):  # read as text it fails at its first byte that is not UTF-8
        raise CLIUsageError(
            f"--input-file {path!r} is a Parquet file, which predict does not read; expected a UTF-8 text file "
            f"with one input per line, or JSON Lines with the text in an {input_field!r} field"
        )
    try:
        return read_input_records(path, input_field=input_field)
    except DataFormatError as error:
        raise CLIUsageError(f"--input-file: {error}") from error


def _predict(argv: Sequence[str], debug: bool = False) -> int:
    if _left_to_the_main_process("predict"):
        return 0
    args, common, extra = _parse("predict", argv)
    check_confidence_options(args.confidence, args.label_candidates)
    _setup_logging(debug)
    if not args.model_name_or_path:
        raise CLIUsageError("--model is required: the folder a training run saved (e.g. demo-out)")
    _prepare_output_file(args.output_file)
    inputs = input_records(extra.texts, source="text argument")
    if args.input_file:
        # JSON Lines in the run's own layout: the text in its --input-column (or 'input')
        inputs += _read_inputs(args.input_file, recorded_input_column(args.model_name_or_path))
    with quiet_libraries(not debug):
        rows = run_prediction(
            args.model_name_or_path,
            inputs,
            label_candidates=args.label_candidates,
            confidence=args.confidence,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            rationale_max_new_tokens=args.rationale_max_new_tokens,
            device=args.device,
            base_model=args.base_model_name_or_path,
        )
    for index, row in enumerate(rows):
        if extra.jsonl:
            print(json.dumps(row, ensure_ascii=False))
            continue
        if index:
            print()
        _print_prediction(row)
    if args.output_file:
        with open(args.output_file, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def _print_prediction(row: dict[str, Any]) -> None:
    """One prediction as readable lines; an empty label or rationale shows as ``""``."""
    print(f"input:      {row['input']}")
    if "choices" in row:  # the question's own choices, the candidates scored
        print(f"choices:    {json.dumps(row['choices'], ensure_ascii=False)}")
    print(f"label:      {shown_text(row['label'])}")
    print(f"confidence: {row['confidence']:.4f}")
    if "generated_label" in row:  # candidates: the label above is the most likely candidate
        print(f"generated:  {shown_text(row['generated_label'])}")
    print(f"rationale:  {shown_text(row['rationale'])}")


_COMMANDS: dict[str, Callable[[Sequence[str], bool], int]] = {
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "demo": _demo,
    "generate-rationales": generate_rationales_command,
}


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = f"missing key {error.args[0]!r}"
    first = text.splitlines()[0].strip() if text else ""
    if isinstance(error, CLIUsageError):
        return first
    # a private subclass (the pipeline's option-worded errors) is shown by its public class's name
    name = next(kind.__name__ for kind in type(error).__mro__ if not kind.__name__.startswith("_"))
    return f"{name}: {first}" if first else name


# TrainingArguments has a --debug option of its own that takes these values; a bare --debug is ours.
_TRAINER_DEBUG_VALUES = ("underflow_overflow", "tpu_metrics_debug")


def _strip_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    kept, debug = [], False
    for index, token in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if token == "--debug" and not following.startswith(_TRAINER_DEBUG_VALUES):
            debug = True
        else:
            kept.append(token)
    return kept, debug


def end_distributed_run() -> None:
    """Under ``torchrun`` or ``accelerate launch``: wait until every process has finished its work, then close
    the process group. Nothing happens where no process group was started (one process, ``predict``).

    Without this the processes other than the main one left as soon as their share was done, while the main
    one was still showing examples and saving: with gloo a process that exits with its process group open
    aborts ("terminate called without an active exception"), and the launcher then stopped the main process
    before it had written ``results.json`` and the model card.

    Examples:
        >>> end_distributed_run()  # one process: nothing to wait for
    """
    distributed = sys.modules.get("torch.distributed")  # never imported: no process group to end
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return
    try:
        distributed.barrier()
    except RuntimeError as error:  # gloo and NCCL: a process closed its connection, having failed
        raise RuntimeError(
            "another process of this distributed run stopped before the end (its error is printed above)"
        ) from error
    distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hf-cotmi`` console script; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for a usage error (bad option or value, unknown dataset, missing file), 1 when the
        work itself failed, 130 when interrupted.

    Examples:
        >>> main(["demo", "--no-such-flag"])  # doctest: +SKIP
        hf-cotmi demo: error: unrecognized arguments: --no-such-flag (see hf-cotmi demo --help)
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(_OVERVIEW)
        print(f"{PROG}: error: no command given; choose one of {', '.join(_COMMANDS)}", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_OVERVIEW, end="")
        return 0
    if argv[0] == "--version":
        from . import __version__

        print(f"{PROG} {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in _COMMANDS:
        print(
            f"{PROG}: error: unknown command {command!r}; choose one of {', '.join(_COMMANDS)} (see {PROG} --help)",
            file=sys.stderr,
        )
        return 2
    rest, debug = _strip_debug(rest)
    try:
        status = _COMMANDS[command](rest, debug)
        end_distributed_run()
        return status
    except KeyboardInterrupt as interrupt:
        # a message, where there is one, says what the run left and how to go on
        detail = f"; {interrupt}" if str(interrupt) else ""
        print(f"{PROG} {command}: interrupted{detail}", file=sys.stderr)
        return 130
    except Exception as error:  # every failure becomes one line (the traceback with --debug)
        if debug:
            traceback.print_exc()
        usage = isinstance(error, (CLIUsageError, FileNotFoundError))
        hint = "" if usage or debug else " (--debug shows the traceback)"
        print(f"{PROG} {command}: error: {_one_line(error)}{hint}", file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
