"""Parsing a command line into argument dataclasses, the same way for every ``hf-cotmi`` command.

:func:`build_argument_parser` makes a ``transformers.HfArgumentParser`` whose errors are one-line
:class:`~hf_cotmi.run_arguments.CLIUsageError` exceptions (no usage dump, no exit) and whose optional booleans
work as bare switches; :func:`parse_command_line` parses with ``--config FILE.yaml`` (option values from a
file, typed and checked as on the command line; flags given on the command line win) and turns a
dataclass's own check (``__post_init__``) into a usage error naming the flag or the config file and key.
:mod:`hf_cotmi.cli` and :mod:`hf_cotmi.teacher.command` both parse through here.

Examples:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Options:
    ...     steps: int = 1
    >>> parser = build_argument_parser([Options, CommonArguments], prog="tool")
    >>> parse_command_line(parser, ["--steps", "3"])[0].steps
    3
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .run_arguments import CLIUsageError, error_summary

__all__ = ["CommonArguments", "build_argument_parser", "parse_command_line"]


@dataclass
class CommonArguments:
    """Options every command has (``--debug``, handled before parsing, is the other one).

    Examples:
        >>> CommonArguments().config is None
        True
    """

    config: str | None = field(
        default=None,
        metadata={"help": "YAML file of option values, keyed by option name (underscores or dashes); "
                  "flags given on the command line win."},
    )  # fmt: skip


def build_argument_parser(
    dataclasses: Sequence[type], *, prog: str, description: str | None = None, epilog: str | None = None
) -> Any:
    """An ``HfArgumentParser`` of ``dataclasses`` with one-line errors and bare boolean switches.

    Add :class:`CommonArguments` to ``dataclasses`` for ``--config`` to show in ``--help``.

    Examples:
        >>> parser = build_argument_parser([CommonArguments], prog="tool")
        >>> "--config" in parser.format_help()
        True
    """
    # allow_abbrev=False: an abbreviation such as --conf must not pass for --config (which is read before
    # parsing, by its full name) or for any other option
    parser = _parser_class()(
        list(dataclasses), prog=prog, description=description, epilog=epilog, allow_abbrev=False
    )
    _bare_optional_bool_flags(parser)
    _expand_home_in_paths(parser)
    return parser


# options whose value is a file or folder (or a Hub name, which never starts with "~"), of every command
_PATH_OPTIONS = frozenset(
    {
        "config",
        "data_dir",
        "train_file",
        "validation_file",
        "test_file",
        "input_file",
        "output_file",
        "output_dir",
        "plot_file",
        "rejects_file",
        "template_file",
        "chat_template_file",
        "model_name_or_path",
        "base_model_name_or_path",
        "tokenizer_name_or_path",
        "teacher_model",
        "resume_from_checkpoint",
        "generation_config",
        "deepspeed",
        "fsdp_config",
        "accelerator_config",
    }
)


def _expand_home(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` made that home folder, as a shell does with a word that
    starts with it. A shell leaves the ``~`` after the ``=`` of ``--output-dir=~/runs`` as it is and never
    sees a ``--config`` file's values; this function expands the ``~`` in both.

    Examples:
        >>> import os
        >>> _expand_home("~/runs") == os.path.join(os.path.expanduser("~"), "runs")
        True
        >>> _expand_home("runs/~x"), _expand_home("google/flan-t5-small")
        ('runs/~x', 'google/flan-t5-small')
    """
    return os.path.expanduser(path)


def _expand_home_in_paths(parser: Any) -> None:
    """Let every path option (:data:`_PATH_OPTIONS`) expand a leading ``~`` (:func:`_expand_home`), given on
    the command line in any spelling or in a ``--config`` file (whose values go through the same ``type``),
    then read as before (text, or a ``Path``)."""
    for action in parser._actions:
        if action.dest in _PATH_OPTIONS and action.option_strings:
            read = str if action.type is None else action.type
            action.type = _ExpandingType(read)


@dataclass(frozen=True)
class _ExpandingType:
    """An ``argparse`` type that expands ``~`` (:func:`_expand_home`) before reading the text as ``read`` does."""

    read: Any

    def __call__(self, text: str) -> Any:
        return self.read(_expand_home(text))


def _parser_class() -> type:
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        """HfArgumentParser whose errors are exceptions carrying one line (no usage dump, no exit)."""

        def error(self, message: str) -> None:  # type: ignore[override]
            raise CLIUsageError(f"{message} (see {self.prog} --help)")

    return Parser


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
    """The file ``--config`` names in ``argv``; two different files are refused (only one would be read)."""
    paths: list[str] = []
    for index, token in enumerate(argv):
        if token == "--config":
            if index + 1 >= len(argv):
                raise CLIUsageError("--config needs a YAML file")
            paths.append(argv[index + 1])
        elif token.startswith("--config="):
            paths.append(token.split("=", 1)[1])
            if not paths[-1]:
                raise CLIUsageError("--config needs a YAML file")
    distinct = list(dict.fromkeys(_expand_home(path) for path in paths))
    if len(distinct) > 1:
        shown = " and ".join(repr(path) for path in distinct)
        raise CLIUsageError(f"--config is given twice ({shown}): only one file is read; merge them into one")
    return distinct[0] if distinct else None


class _DuplicateKeyError(Exception):
    """A mapping in a config file that gives one key twice (YAML would keep the last silently)."""

    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(f"key {key!r} is given twice (lines {first_line} and {second_line}); keep one")


def _load_yaml(handle: Any) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping (merge keys ``<<`` excepted)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                first_lines: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
                    try:
                        if key in first_lines:
                            raise _DuplicateKeyError(key, first_lines[key], line)
                        first_lines[key] = line
                    except TypeError:  # an unhashable key: SafeLoader's own check names it
                        continue
            return super().construct_mapping(node, deep=deep)

    return yaml.load(handle, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def _read_config(path: str, parser: Any) -> dict[str, Any]:
    """The option values of config file ``path``, keyed by ``dest`` and typed as on the command line."""
    import yaml

    if not os.path.isfile(path):
        raise CLIUsageError(f"--config {path!r} does not exist or is not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            values = _load_yaml(handle)
    except _DuplicateKeyError as error:
        raise CLIUsageError(f"--config {path!r}: {error}") from error
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
    actions = _config_actions(parser)
    annotations = _declared_annotations(parser)
    config: dict[str, Any] = {}
    given_as: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name == "config":
            raise CLIUsageError(f"--config {path!r}: a config file cannot name another ({key!r}); merge them")
        if name not in actions:
            raise CLIUsageError(
                f"--config {path!r}: unknown option {key!r} for {parser.prog} (see {parser.prog} --help)"
            )
        action = actions[name]
        if action.dest in given_as:
            raise CLIUsageError(
                f"--config {path!r}: {given_as[action.dest]!r} and {key!r} both set {action.dest}; keep one"
            )
        given_as[action.dest] = key
        if action.nargs in ("+", "*") and isinstance(value, str):
            value = [value]
        config[action.dest] = _ConfigValue(path, key, action, annotations.get(action.dest, "")).typed(value)
    return config


def _config_actions(parser: Any) -> dict[str, Any]:
    """The parser's actions by every name a config key may use: the ``dest`` and each flag without dashes."""
    actions: dict[str, Any] = {}
    for action in parser._actions:
        if action.dest == "help" or type(action).__name__ == "_StoreFalseAction":  # skip --no-* complements
            continue
        actions[action.dest] = action
        for option in action.option_strings:  # aliases such as --model
            actions.setdefault(option.lstrip("-").replace("-", "_"), action)
    return actions


def _declared_annotations(parser: Any) -> dict[str, str]:
    """Each dataclass field's declared annotation, as text (``HfArgumentParser`` rewrites an action's
    ``type`` to the one type its flag parses, so ``report_to``'s ``list[str]`` or ``lr_scheduler_kwargs``'s
    ``dict`` show only here)."""
    import dataclasses

    declared: dict[str, str] = {}
    for kind in getattr(parser, "dataclass_types", ()):
        for field_ in dataclasses.fields(kind):
            for cls in kind.__mro__:
                annotation = vars(cls).get("__annotations__", {}).get(field_.name)
                if annotation is not None:
                    declared[field_.name] = str(annotation)
                    break
    return declared


@dataclass
class _ConfigValue:
    """Types one config value as ``argparse`` would type it from the command line; errors name file and key."""

    path: str
    key: Any
    action: Any
    annotation: str

    def typed(self, value: Any) -> Any:
        """The value, typed; a list where the field takes one (``report_to: [wandb, tensorboard]``)."""
        if isinstance(value, list) and (self.action.nargs in ("+", "*") or "list[" in self.annotation):
            return [self.typed_one(item) for item in value]
        return self.typed_one(value)

    def read(self) -> Any:
        """What turns the value's text into the option's value, as ``argparse`` would (``~`` expanded too)."""
        from transformers.hf_argparser import string_to_bool

        if self.action.nargs == 0 and isinstance(self.action.const, bool):  # a plain switch (predict --jsonl)
            return string_to_bool
        return str if self.action.type is None else self.action.type

    def kind(self) -> Any:
        """The type the option's value has: :meth:`read`, unwrapped from a path option's ``~`` expansion."""
        read = self.read()
        return read.read if isinstance(read, _ExpandingType) else read

    def expected(self) -> str:
        from enum import Enum

        from transformers.hf_argparser import string_to_bool

        kind = self.kind()
        choices = self.action.choices
        if choices is None and isinstance(kind, type) and issubclass(kind, Enum):
            choices = [member.value for member in kind]
        if choices:
            return f"one of {', '.join(str(choice) for choice in choices)}"
        if "dict" in self.annotation:  # lr_scheduler_kwargs: a mapping or its JSON text
            return "a mapping or its JSON text" if kind is str else "a mapping"
        names = {int: "an integer", float: "a number", string_to_bool: "true or false", str: "text"}
        return names.get(kind, "text")

    def refuse(self, value: Any, hint: str = "") -> CLIUsageError:
        shown = f"{value!r} ({type(value).__name__})"
        return CLIUsageError(
            f"--config {self.path!r}: {self.key!r} must be {self.expected()}; got {shown}{hint}"
        )

    def typed_one(self, value: Any) -> Any:
        from argparse import ArgumentTypeError

        from transformers.hf_argparser import string_to_bool

        kind = self.kind()
        if value is None:
            if self.action.default is None:
                return None
            raise self.refuse(value)
        if isinstance(value, str):  # argparse converts strings, as on the command line
            try:
                value = self.read()(value)
            except (ValueError, TypeError, ArgumentTypeError):
                raise self.refuse(value) from None
        elif isinstance(value, dict) and "dict" in self.annotation and self.action.nargs not in ("+", "*"):
            return value  # a mapping for a dict-or-JSON-text field such as lr_scheduler_kwargs
        elif isinstance(value, (list, dict)):
            raise self.refuse(value)
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.refuse(value)
        elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self.refuse(value)
        elif kind is float:
            value = float(value)
        elif kind is string_to_bool and not isinstance(value, bool):
            raise self.refuse(value)
        elif kind not in (int, float, string_to_bool):  # text, a choice, an enum, a path: only from text
            raise self.refuse(value, " (quote it in the YAML file to give text)")
        if self.action.choices and value not in self.action.choices:
            raise self.refuse(value)
        return value


def parse_command_line(
    parser: Any, argv: Sequence[str], defaults: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Parse ``argv`` into the parser's dataclasses, reading ``--config FILE.yaml`` first.

    Args:
        parser: from :func:`build_argument_parser` (or ``HfArgumentParser`` with one-line errors).
        argv: the arguments.
        defaults: option values that replace the dataclasses' defaults (a config file and flags win).

    Returns:
        One instance per dataclass, then the namespace of any extra ``argparse`` arguments.

    Raises:
        CLIUsageError: an unknown option, a bad value, a config file that is missing, not YAML or holds an
            unknown key, an option given twice or a value of the wrong type, two different config files, or
            a value a dataclass's check refuses (the message names ``argument --flag`` or
            ``--config 'file', key 'name'`` where it can tell).

    Examples:
        >>> parser = build_argument_parser([CommonArguments], prog="tool")
        >>> parse_command_line(parser, [])[0].config is None
        True
    """
    if defaults:
        parser.set_defaults(**defaults)
    path = _config_path(argv)
    from_config: dict[str, Any] = _read_config(path, parser) if path else {}
    parser.set_defaults(**from_config)
    try:
        outputs = parser.parse_args_into_dataclasses(
            args=list(argv), return_remaining_strings=True, look_for_args_file=False
        )
    except CLIUsageError:
        raise
    except (ValueError, TypeError) as error:  # a dataclass's __post_init__ check: a usage error too
        first = error_summary(error)
        where = _where_given(first, parser, argv, (path, set(from_config)) if path else None)
        raise CLIUsageError(f"{where}{first} (see {parser.prog} --help)") from error
    *values, remaining = outputs
    if remaining:
        raise CLIUsageError(f"unrecognized arguments: {' '.join(remaining)} (see {parser.prog} --help)")
    return tuple(values)


def _where_given(message: str, parser: Any, argv: Sequence[str], config: tuple[str, set[str]] | None) -> str:
    """``"argument --flag: "`` or ``"--config 'file', key 'name': "`` for the option a check's message names.

    The option is the first field name the message starts with (``max_steps must be ...``,
    ``fp16=True cannot ...``); nothing when it names none or the value is a default.
    """
    match = re.match(r"\w+", message)
    actions = {action.dest: action for action in parser._actions}
    if match is None or match.group(0) not in actions or message[match.end() :].startswith(","):
        return ""  # no option named, or several (``a, b and c are all 0``)
    action = actions[match.group(0)]
    for token in reversed(argv):  # the last one given is the one argparse kept
        option = token.split("=", 1)[0]
        if option in action.option_strings:
            return f"argument {option}: "
    if config and action.dest in config[1]:
        return f"--config {config[0]!r}, key {action.dest!r}: "
    return ""
