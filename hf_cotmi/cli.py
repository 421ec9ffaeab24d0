"""The ``hf-cotmi`` command: ``train``, ``evaluate``, ``predict`` and ``demo``.

Every subcommand is built on ``transformers.HfArgumentParser``: ``train`` and ``demo`` accept every
:class:`~hf_cotmi.DSSMITrainingArguments` field as a flag (``--learning-rate``, ``--mi-loss-weight``,
``--push-to-hub``, ...) beside the model, data and evaluation options, and ``--config file.yaml`` sets any
of them from a file (flags given on the command line win). Errors print one line and exit non-zero;
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

from .confidence import CONFIDENCE_MODES
from .pipeline import quiet_libraries, run_evaluation, run_prediction, run_training
from .run_arguments import CLIUsageError, DataArguments, EvaluationArguments, ModelArguments
from .teacher.command import generate_rationales_command

__all__ = [
    "main",
    "CommonArguments",
    "EvaluateArguments",
    "PredictArguments",
    "build_parser",
    "demo_arguments",
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


@dataclass
class CommonArguments:
    """Options every subcommand has (``--debug``, handled before parsing, is the other one).

    Examples:
        >>> CommonArguments().config is None
        True
    """

    config: str | None = field(
        default=None,
        metadata={"help": "YAML file of option values, keyed by option name (underscores or dashes); "
                  "flags given on the command line win."},
    )  # fmt: skip


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
    split: str = field(default="test", metadata={"help": "Split to evaluate: train, valid or test."})
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
    input_file: str | None = field(
        default=None,
        metadata={"help": "Read inputs from this file: one text per line, or JSON Lines with an 'input' field. "
                  "'-' reads standard input."},
    )  # fmt: skip
    output_file: str | None = field(
        default=None, metadata={"help": "Also write the predictions as JSON Lines."}
    )
    confidence: str | None = field(
        default=None,
        metadata={"help": "sequence (probability of the generated label), first_token, or candidates "
                  "(with --label-candidates).", "choices": list(CONFIDENCE_MODES)},
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


def _parser_class() -> type:
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        """HfArgumentParser whose errors are exceptions carrying one line (no usage dump, no exit)."""

        def error(self, message: str) -> None:  # type: ignore[override]
            raise CLIUsageError(f"{message} (see {self.prog} --help)")

    return Parser


_DESCRIPTIONS = {
    "train": "Train a seq2seq or decoder-only student with Distilling Step-by-Step plus the MI loss, then "
    "evaluate accuracy and calibration on the test split, save model, tokenizer and model card, and optionally "
    "push to the Hub.",
    "evaluate": "Accuracy, expected calibration error and average confidence of a saved student.",
    "predict": "Label, rationale and confidence of a saved student for each input text.",
    "demo": "Train a small T5 built in code on a generated multi-step arithmetic task with DSS + MI (offline, "
    "about two minutes on two CPU cores), evaluate, show examples and save everything. --model and "
    "--dataset/--data-dir switch to a real student and real data; --student-type causal trains a small "
    "decoder-only (Llama) student instead.",
}


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
    """The ``HfArgumentParser`` of one subcommand (``train``, ``evaluate``, ``predict`` or ``demo``).

    Examples:
        >>> parser = build_parser("train")
        >>> "--mi-loss-weight" in parser.format_help() and "--use-peft" in parser.format_help()
        True
    """
    parser = _parser_class()(
        _dataclasses_for(command),
        prog=f"{PROG} {command}",
        description=_DESCRIPTIONS[command],
        epilog="--debug (a bare flag) shows the traceback of an error and library logging.",
    )
    _bare_optional_bool_flags(parser)
    if command == "predict":
        parser.add_argument("texts", nargs="*", help="Input texts (or use --input-file).")
        # a plain switch: a bool field would take the next text as its value
        parser.add_argument("--jsonl", action="store_true", help="Print JSON Lines instead of readable text.")
    return parser


def _bare_optional_bool_flags(parser: Any) -> None:
    """Let ``bool | None`` fields (``--disable-tqdm``, ``--tf32``, ...) be given as a bare switch.

    ``HfArgumentParser`` gives a plain ``bool`` field ``nargs="?"`` (``--use-cpu`` alone means true) but a
    ``bool | None`` field with default ``None`` a required value, so ``--disable-tqdm --use-cpu`` fails with
    "expected one argument". Here both kinds behave alike: alone means true, ``false``/``true`` still work,
    and leaving the flag out keeps the ``None`` default (transformers then decides).
    """
    from transformers.hf_argparser import string_to_bool

    for action in parser._actions:
        if action.type is string_to_bool and action.nargs is None and action.option_strings:
            action.nargs = "?"
            action.const = True


def _config_path(argv: Sequence[str]) -> str | None:
    path = None
    for index, token in enumerate(argv):
        if token == "--config":
            if index + 1 >= len(argv):
                raise CLIUsageError("--config needs a YAML file")
            path = argv[index + 1]
        elif token.startswith("--config="):
            path = token.split("=", 1)[1]
    return path


def _read_config(path: str, parser: Any) -> dict[str, Any]:
    import yaml

    if not os.path.isfile(path):
        raise CLIUsageError(f"--config {path!r} does not exist or is not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise CLIUsageError(f"--config {path!r} is not valid YAML{line}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise CLIUsageError(
            f"--config {path!r} must hold a mapping of option names to values; got {type(values).__name__}"
        )
    from argparse import ArgumentTypeError

    from transformers.hf_argparser import string_to_bool

    def _typed(action: Any, key: Any, value: Any) -> Any:
        """The value as argparse would have typed it from the command line; an error names file and key."""
        if isinstance(value, list) and action.nargs in ("+", "*"):
            return [_typed_one(action, key, item) for item in value]
        return _typed_one(action, key, value)

    def _typed_one(action: Any, key: Any, value: Any) -> Any:
        kind = action.type
        expected = {int: "an integer", float: "a number", string_to_bool: "true or false", str: "text"}.get(
            kind, "a value"
        )
        if action.choices:
            expected = f"one of {', '.join(str(c) for c in action.choices)}"

        def refuse(hint: str = "") -> CLIUsageError:
            shown = f"{value!r} ({type(value).__name__})"
            return CLIUsageError(f"--config {path!r}: {key!r} must be {expected}; got {shown}{hint}")

        if value is None:
            if action.default is None:
                return None
            raise refuse()
        if isinstance(value, str) and callable(kind):  # argparse converts strings, as on the command line
            try:
                value = kind(value)
            except (ValueError, TypeError, ArgumentTypeError):
                raise refuse() from None
        elif isinstance(value, (list, dict)):
            if isinstance(value, list) or action.nargs in ("+", "*") or kind in (int, float, string_to_bool):
                raise refuse()
            return value  # a mapping for a dict-or-JSON-text field such as lr_scheduler_kwargs
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise refuse()
        elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise refuse()
        elif kind is string_to_bool and not isinstance(value, bool):
            raise refuse()
        elif kind is str or action.choices:
            raise refuse(" (quote it in the YAML file to give text)")
        elif kind is float:
            value = float(value)
        if action.choices and value not in action.choices:
            raise refuse()
        return value

    actions = {}
    for action in parser._actions:
        if action.dest == "help" or type(action).__name__ == "_StoreFalseAction":  # skip --no-* complements
            continue
        actions[action.dest] = action
        for option in action.option_strings:  # aliases such as --model
            actions.setdefault(option.lstrip("-").replace("-", "_"), action)
    config: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name in actions:
            name = actions[name].dest
        else:
            raise CLIUsageError(
                f"--config {path!r}: unknown option {key!r} for {parser.prog} (see {parser.prog} --help)"
            )
        if actions[name].nargs in ("+", "*") and isinstance(value, str):
            value = [value]
        config[name] = _typed(actions[name], key, value)
    return config


def _parse(command: str, argv: Sequence[str], defaults: dict[str, Any] | None = None) -> tuple[Any, ...]:
    parser = build_parser(command)
    if defaults:
        parser.set_defaults(**defaults)
    path = _config_path(argv)
    if path:
        parser.set_defaults(**_read_config(path, parser))
    try:
        outputs = parser.parse_args_into_dataclasses(
            args=list(argv), return_remaining_strings=True, look_for_args_file=False
        )
    except CLIUsageError:
        raise
    except (ValueError, TypeError) as error:  # a dataclass's __post_init__ check: a usage error too
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CLIUsageError(f"{first} (see {parser.prog} --help)") from error
    *values, remaining = outputs
    if remaining:
        raise CLIUsageError(f"unrecognized arguments: {' '.join(remaining)} (see {parser.prog} --help)")
    return tuple(values)


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if debug:
        import transformers

        logging.getLogger("hf_cotmi").setLevel(logging.INFO)
        transformers.logging.set_verbosity_info()


# ---------------------------------------------------------------------------------------------- commands


def _train(argv: Sequence[str], debug: bool = False) -> int:
    model_args, data_args, eval_args, training_args, common = _parse("train", argv)
    _setup_logging(debug)
    if not model_args.model_name_or_path and model_args.student_type is None:
        raise CLIUsageError(
            "--model is required: a Hub name (e.g. google-t5/t5-small) or a local folder; or "
            "--student-type seq2seq|causal for a small model built in code ('hf-cotmi demo' trains one)"
        )
    run_training(model_args, data_args, eval_args, training_args, title=f"{PROG} train")
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
    _setup_logging(debug)
    execute_demo(model_args, data_args, eval_args, training_args, demo_args, debug=debug)
    return 0


def _evaluate(argv: Sequence[str], debug: bool = False) -> int:
    args, data_args, eval_args, common = _parse("evaluate", argv)
    _setup_logging(debug)
    if not args.model_name_or_path:
        raise CLIUsageError("--model is required: the folder a training run saved (e.g. demo-out)")
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
        )
    print(
        f"{report['dataset'] or 'data'} {report['split']} ({report['num_examples']} examples, "
        f"{report['confidence_mode']} confidence, {report['n_bins']} bins):"
    )
    print(f"  accuracy        {report['accuracy']:.4f}")
    print(f"  ece             {report['ece']:.4f}")
    print(f"  avg_confidence  {report['avg_confidence']:.4f}")
    print(f"  reliability diagram: {report['reliability_diagram']}")
    if args.output_file:
        directory = os.path.dirname(args.output_file)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(args.output_file, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
        print(f"  metrics written to {args.output_file}")
    return 0


def _read_inputs(path: str) -> list[str]:
    from .data.jsonfiles import DataFormatError
    from .data.textfiles import read_input_lines

    if path != "-" and not os.path.isfile(path):
        raise CLIUsageError(f"--input-file {path!r} does not exist or is not a file")
    try:
        return read_input_lines(path)
    except DataFormatError as error:
        raise CLIUsageError(f"--input-file: {error}") from error


def _predict(argv: Sequence[str], debug: bool = False) -> int:
    args, common, extra = _parse("predict", argv)
    _setup_logging(debug)
    if not args.model_name_or_path:
        raise CLIUsageError("--model is required: the folder a training run saved (e.g. demo-out)")
    texts = list(extra.texts)
    if args.input_file:
        texts += _read_inputs(args.input_file)
    with quiet_libraries(not debug):
        rows = run_prediction(
            args.model_name_or_path,
            texts,
            label_candidates=args.label_candidates,
            confidence=args.confidence,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            rationale_max_new_tokens=args.rationale_max_new_tokens,
            device=args.device,
        )
    for index, row in enumerate(rows):
        if extra.jsonl:
            print(json.dumps(row, ensure_ascii=False))
            continue
        if index:
            print()
        print(f"input:      {row['input']}")
        print(f"label:      {row['label']}")
        print(f"confidence: {row['confidence']:.4f}")
        print(f"rationale:  {row['rationale']}")
    if args.output_file:
        with open(args.output_file, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


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
    name = type(error).__name__
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
        return _COMMANDS[command](rest, debug)
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
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
