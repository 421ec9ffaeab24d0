"""The inputs of ``hf-cotmi predict`` and the choices of each multiple-choice question among them.

A run whose confidence is candidates over a column of each example's own candidates (CQA's ``choices``)
scores each question's own choices at prediction too. :func:`question_choices` reads them from the input's
JSON Lines record (the column the run recorded, e.g. ``{"input": ..., "choices": ["sea", "tree"]}``), else
from the ``Answer Choices:`` lines its text shows (as :func:`hf_cotmi.data.dss.format_cqa_input` writes a CQA
question); :func:`choices_per_input` refuses an input with neither, naming it.

Examples:
    >>> question = InputRecord("Where do fish live?\\nAnswer Choices:\\n(a) sea\\n(b) tree", "text argument 1")
    >>> choices_per_input([question], "choices", needed_by="the run scores each question's own 'choices'")
    [['sea', 'tree']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data.textfiles import InputRecord
from .run_arguments import CLIUsageError
from .teacher.prompts import choices_in_input

__all__ = ["input_records", "question_choices", "choices_per_input"]


def input_records(inputs: Sequence[str | InputRecord], source: str = "input") -> list[InputRecord]:
    """``inputs`` as :class:`~hf_cotmi.data.textfiles.InputRecord`; a plain text is named ``f"{source} N"``.

    Examples:
        >>> [record.where for record in input_records(["a", InputRecord("b", "q.jsonl, line 4")])]
        ['input 1', 'q.jsonl, line 4']
    """
    return [
        item if isinstance(item, InputRecord) else InputRecord(str(item), f"{source} {number}")
        for number, item in enumerate(inputs, start=1)
    ]


def question_choices(record: InputRecord, column: str) -> list[str] | None:
    """The choices of one multiple-choice input: its record's ``column`` list, else the ``Answer Choices:``
    lines of its text; None when it has neither. A record's list wins over the text's lines.

    Raises:
        CLIUsageError: the record's ``column`` is not a non-empty list of non-blank strings (names the input).

    Examples:
        >>> question_choices(InputRecord("q", "line 1", {"input": "q", "choices": ["sea", "tree"]}), "choices")
        ['sea', 'tree']
        >>> question_choices(InputRecord("Where?\\nAnswer Choices:\\n(a) sea\\n(b) tree", "line 2"), "choices")
        ['sea', 'tree']
        >>> question_choices(InputRecord("Where?", "line 3"), "choices") is None
        True
    """
    if column in record.fields:
        return _checked_choices(record.fields[column], column, record.where)
    return choices_in_input(record.text) or None


def _checked_choices(value: Any, column: str, where: str) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(choice, str) and choice.strip() for choice in value)
    ):
        raise CLIUsageError(
            f"{where}: {column!r} must be a list of answer strings (at least one, none blank); got {value!r}"
        )
    return list(value)


def choices_per_input(records: Sequence[InputRecord], column: str, *, needed_by: str) -> list[list[str]]:
    """The choices of every input (:func:`question_choices`), for candidates confidence over each question's
    own choices.

    Args:
        records: the inputs.
        column: the JSON field holding a record's choices (the column the run recorded, CQA's ``choices``).
        needed_by: why choices are needed, for the error (``"the run's confidence is candidates over ..."``).

    Raises:
        CLIUsageError: an input has no choices (names the first and counts them) or a malformed ``column``.

    Examples:
        >>> try:
        ...     choices_per_input([InputRecord("Where?", "q.txt, line 2")], "choices", needed_by="the run needs them")
        ... except CLIUsageError as error:
        ...     print(str(error).split(";")[0])
        q.txt, line 2: the run needs them, but this input has none (1 of 1 inputs)
    """
    found = [question_choices(record, column) for record in records]
    missing = [record.where for record, choices in zip(records, found) if choices is None]
    if missing:
        raise CLIUsageError(
            f"{missing[0]}: {needed_by}, but this input has none ({len(missing)} of {len(records)} inputs); "
            f"give each question its choices as an --input-file JSON Lines record with a {column!r} list "
            f'({{"input": "...", "{column}": ["...", "..."]}}) or in its text, a line \'Answer Choices:\' '
            "then one line per choice, '(a) ...', '(b) ...'; or use --confidence sequence to score the "
            "generated label instead"
        )
    return [choices for choices in found if choices is not None]
