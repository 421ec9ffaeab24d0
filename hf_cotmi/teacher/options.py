"""Checks of the teacher's options, shared by the Python API and the CLI.

:func:`hf_cotmi.generate_rationales`, the two backends (:mod:`hf_cotmi.teacher.backends`) and
``hf-cotmi generate-rationales`` (:func:`hf_cotmi.teacher.command.check_option_values`, before any file or
model is read) refuse a bad value with the same ``ValueError``, whose message starts with the option's name
(the command line turns it into a usage error naming the flag).

Examples:
    >>> check_positive("num_samples", 3)
    >>> check_positive("num_samples", 0)
    Traceback (most recent call last):
    ...
    ValueError: num_samples=0 must be a positive integer
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "OUTPUT_SUFFIXES",
    "check_output_file",
    "check_positive",
    "check_request_timeout",
    "check_sampling",
    "check_max_records",
    "refuse_other_teachers_options",
]

# options only one kind of teacher reads, with their defaults: another value for the other kind is refused
_LOCAL_ONLY = {"batch_size": 8, "device": None, "chat_template_file": None}
_SERVER_ONLY = {
    "concurrency": 4,
    "api_key_env": "OPENAI_API_KEY",
    "request_timeout": 120.0,
    "max_retry_after": 300.0,
}


OUTPUT_SUFFIXES: tuple[str, ...] = (".jsonl", ".json")
"""Names of an output file that ``hf-cotmi train --train-file`` reads as the JSON Lines written into it (it
reads ``.csv`` and ``.parquet`` by their own formats)."""


def check_output_file(output_file: str | os.PathLike[str]) -> None:
    """Refuse an output file whose name ``hf-cotmi train --train-file`` would not read as JSON Lines.

    Raises:
        ValueError: the suffix is not one of :data:`OUTPUT_SUFFIXES` (case aside); the message starts with
            ``output_file``.

    Examples:
        >>> check_output_file("train.jsonl")
        >>> try:
        ...     check_output_file("train.csv")
        ... except ValueError as error:
        ...     print(str(error).split("; ")[1])
        name it with .jsonl (e.g. 'train.jsonl')
    """
    path = Path(output_file)
    suffix = path.suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return
    read_as = f"reads as {suffix!r}" if suffix in (".csv", ".parquet") else "does not read"
    raise ValueError(
        f"output_file {str(output_file)!r} would hold JSON Lines under a name that hf-cotmi train --train-file "
        f"{read_as}; name it with .jsonl (e.g. {path.stem + '.jsonl'!r})"
    )


def check_positive(name: str, value: object) -> None:
    """Refuse a count that is not a positive integer (``num_samples``, ``max_new_tokens``, ``batch_size``,
    ``concurrency``).

    Args:
        name: the option's name, the start of the message.
        value: its value.

    Raises:
        ValueError: ``value`` is not an ``int``, or is below 1.

    Examples:
        >>> check_positive("batch_size", 8)
        >>> check_positive("batch_size", 2.0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=2.0 must be a positive integer
    """
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def check_request_timeout(request_timeout: float) -> None:
    """Refuse a server request timeout that is not above 0 seconds (NaN included). ``math.inf``, and any
    value above ``threading.TIMEOUT_MAX`` (some 292 years, longer than a wait can take), is no limit.

    Raises:
        ValueError: ``request_timeout`` is not > 0.

    Examples:
        >>> check_request_timeout(120.0)
        >>> check_request_timeout(float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: request_timeout=nan must be > 0 seconds
    """
    if not request_timeout > 0:  # NaN too
        raise ValueError(f"request_timeout={request_timeout} must be > 0 seconds")


def check_sampling(temperature: float, top_p: float | None) -> None:
    """Refuse a negative temperature (0 decodes greedily) or a ``top_p`` outside (0, 1] (None: the
    teacher's default).

    Raises:
        ValueError: the message starts with ``temperature=`` or ``top_p=``.

    Examples:
        >>> check_sampling(0.7, None)
        >>> check_sampling(0.7, 0.0)
        Traceback (most recent call last):
        ...
        ValueError: top_p=0.0 must be in (0, 1]
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 decodes greedily)")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1]")


def check_max_records(max_records: int | None) -> None:
    """Refuse a negative ``max_records`` (None: every record).

    Raises:
        ValueError: ``max_records`` is below 0.

    Examples:
        >>> check_max_records(None)
        >>> check_max_records(-1)
        Traceback (most recent call last):
        ...
        ValueError: max_records=-1 must be >= 0
    """
    if max_records is not None and max_records < 0:
        raise ValueError(f"max_records={max_records} must be >= 0")


def _refuse_unused(options: dict[str, Any], unused: dict[str, Any], teacher: str, reads: str) -> None:
    """A ValueError naming an option that ``teacher`` does not read (``reads``: the kind that does)."""
    for name, default in unused.items():
        if options[name] != default:
            raise ValueError(
                f"{name}={options[name]!r} (--{name.replace('_', '-')}) is read by {reads} only, and this "
                f"run's teacher is {teacher}; leave it out"
            )


def refuse_other_teachers_options(options: dict[str, Any], *, server: bool) -> None:
    """Refuse an option the chosen kind of teacher does not read (a server's with a local model, a local
    model's with a server), and a chat template file with ``api="completions"``.

    Args:
        options: option values by ``generate_rationales`` parameter name (``batch_size``, ``concurrency``,
            ``api``, ``chat_template_file``, ...).
        server: the teacher is a server (``base_url``); else a local model (``teacher_model``).

    Raises:
        ValueError: the message starts with the option's name and gives its flag.

    Examples:
        >>> options = {**_LOCAL_ONLY, **_SERVER_ONLY, "api": "chat", "concurrency": 8}
        >>> refuse_other_teachers_options(options, server=True)
        >>> try:
        ...     refuse_other_teachers_options(options, server=False)
        ... except ValueError as error:
        ...     print(str(error).split(" only")[0])
        concurrency=8 (--concurrency) is read by a server teacher (base_url)
    """
    if server:
        _refuse_unused(options, _LOCAL_ONLY, "a server (base_url)", "a local teacher (teacher_model)")
        return
    _refuse_unused(options, _SERVER_ONLY, "a local model (teacher_model)", "a server teacher (base_url)")
    if options["api"] == "completions" and options["chat_template_file"] is not None:
        raise ValueError(
            "chat_template_file (--chat-template-file) is used with api='chat' only; api='completions' "
            "sends the raw prompt"
        )
