"""Reading JSON Lines records and the release's ``llm/`` arrays, with errors that name file and line.

Examples:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> _ = path.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> [(line, record["a"]) for line, record in read_jsonl(path)]
    [(1, 1), (3, 2)]
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

__all__ = [
    "DataFormatError",
    "check_duplicate_keys",
    "read_jsonl",
    "read_json_file",
    "read_json_records",
    "llm_output_files",
    "read_llm_outputs",
    "json_value_kind",
    "shown_value",
]


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file (and line or record).

    Examples:
        >>> issubclass(DataFormatError, ValueError)
        True
    """


def check_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook`` for ``json.loads``: build the object, refusing a key that appears twice.

    Plain ``json.loads`` keeps the last value of a repeated key without a word.

    Raises:
        DataFormatError: a key appears twice in one object (the caller adds the file and line).

    Examples:
        >>> json.loads('{"a": 1, "b": 2}', object_pairs_hook=check_duplicate_keys)
        {'a': 1, 'b': 2}
        >>> try:
        ...     json.loads('{"label": 1, "label": 2}', object_pairs_hook=check_duplicate_keys)
        ... except DataFormatError as error:
        ...     print(error)
        the key 'label' appears twice in one object; expected each key once
    """
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise DataFormatError(f"the key {key!r} appears twice in one object; expected each key once")
        result[key] = value
    return result


def refuse_constant(name: str) -> None:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python's reader takes them): refused, since a
    label read as ``nan`` would train as the text "nan" without a word.

    Raises:
        DataFormatError: always (the caller adds the file and line).

    Examples:
        >>> try:
        ...     json.loads('{"label": NaN}', parse_constant=refuse_constant)
        ... except DataFormatError as error:
        ...     print(error)
        NaN is not a JSON value (a missing number?); write null, or the value as text
    """
    raise DataFormatError(f"{name} is not a JSON value (a missing number?); write null, or the value as text")


def finite_float(text: str) -> float:
    """``parse_float`` for ``json.loads``: the number, refusing one too large for a float (``1e400``), which
    Python would read as infinity, and a text column would then show as null (a "missing" value).

    Raises:
        DataFormatError: the number overflows a 64-bit float (the caller adds the file and line).

    Examples:
        >>> json.loads('{"label": 2.5e3}', parse_float=finite_float)
        {'label': 2500.0}
        >>> try:
        ...     json.loads('{"label": 1e400}', parse_float=finite_float)
        ... except DataFormatError as error:
        ...     print(error)
        the number 1e400 is too large for a 64-bit float (it would read as infinity); write it as text
    """
    value = float(text)
    if math.isinf(value):
        raise DataFormatError(
            f"the number {text} is too large for a 64-bit float (it would read as infinity); write it as text"
        )
    return value


def readable_int(text: str) -> int:
    """``parse_int`` for ``json.loads``: the whole number, or an error naming its length where Python refuses
    to read it (more digits than ``sys.get_int_max_str_digits()``, 4300 by default).

    Raises:
        DataFormatError: too many digits (the caller adds the file and line).

    Examples:
        >>> json.loads('{"label": 12}', parse_int=readable_int)
        {'label': 12}
    """
    try:
        return int(text)
    except ValueError:
        digits = len(text.lstrip("-"))
        raise DataFormatError(
            f"the whole number of {digits} digits is too long to read; write it as text"
        ) from None


_DECODER = json.JSONDecoder(
    object_pairs_hook=check_duplicate_keys,
    parse_constant=refuse_constant,
    parse_float=finite_float,
    parse_int=readable_int,
)


def _read_text(path: Path) -> str:
    from .textfiles import read_text_file  # textfiles imports this module

    return read_text_file(path)


def _load_json(path: Path, expected: str) -> object:
    """The parsed content of a whole-file JSON document; a syntax error names the file, line and ``expected``."""
    text = _read_text(path)
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno}); expected {expected}"
        ) from None
    except DataFormatError as error:
        raise DataFormatError(f"{path}: {error}") from None


def _parse_jsonl(text: str, path: Path) -> list[tuple[int, dict]]:
    from .textfiles import split_lines

    records: list[tuple[int, dict]] = []
    for line_number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = _DECODER.decode(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{path}, line {line_number}: not valid JSON ({error.msg} at column {error.colno}); "
                "expected one JSON object per line (JSON Lines)"
            ) from None
        except DataFormatError as error:
            raise DataFormatError(f"{path}, line {line_number}: {error}") from None
        if not isinstance(record, dict):
            raise DataFormatError(
                f"{path}, line {line_number}: expected a JSON object, got {json_value_kind(record)}"
            )
        records.append((line_number, record))
    return records


def shown_value(value: object) -> str:
    """``repr(value)`` cut to 40 characters, for an error message.

    Examples:
        >>> shown_value("a"), shown_value("x" * 50)[-5:]
        ("'a'", 'xx...')
    """
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def json_value_kind(value: object) -> str:
    """What a JSON value is, for an error message: ``text ('a')``, ``a number (2)``, ``a list``, ``null``, ...

    Examples:
        >>> json_value_kind("a"), json_value_kind(2), json_value_kind([1]), json_value_kind(None)
        ("text ('a')", 'a number (2)', 'a list', 'null')
    """
    shown = shown_value(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"true/false ({shown})"
    if isinstance(value, str):
        return f"text ({shown})"
    if isinstance(value, (int, float)):
        return f"a number ({shown})"
    return "a list" if isinstance(value, list) else type(value).__name__


def _parse_json_array(text: str, path: Path) -> list[tuple[int, dict]]:
    """The objects of one JSON array, element by element, so that an error names its record and line."""
    expected = "a JSON array of objects or JSON Lines"
    whitespace = " \t\n\r"
    position = len(text) - len(text.lstrip(whitespace)) + 1  # just after "["
    records: list[tuple[int, dict]] = []

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def skip(index: int) -> int:
        while index < len(text) and text[index] in whitespace:
            index += 1
        return index

    position = skip(position)
    if position < len(text) and text[position] == "]":
        position += 1
    else:
        while True:
            number, start = len(records) + 1, position
            try:
                item, position = _DECODER.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise DataFormatError(
                    f"{path}, record {number} (line {error.lineno}): not valid JSON ({error.msg} at column "
                    f"{error.colno}); expected {expected}"
                ) from None
            except DataFormatError as error:
                raise DataFormatError(
                    f"{path}, record {number} (line {line_of(position)}): {error}"
                ) from None
            if not isinstance(item, dict):
                raise DataFormatError(
                    f"{path}, record {number} (line {line_of(start)}): expected a JSON object, got "
                    f"{json_value_kind(item)}; the file starts with '[', so it is read as one JSON array of objects"
                )
            records.append((number, item))
            position = skip(position)
            if position < len(text) and text[position] == ",":
                position = skip(position + 1)
                continue
            if position < len(text) and text[position] == "]":
                position += 1
                break
            raise DataFormatError(
                f"{path}, line {line_of(position)}: expected ',' or ']' after record {number}; expected {expected}"
            )
    if skip(position) != len(text):
        raise DataFormatError(
            f"{path}, line {line_of(skip(position))}: text after the closing ']' of the array; expected {expected}"
        )
    return records


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Read a JSON Lines file: one JSON object per line; blank lines are skipped.

    Lines end at ``"\\n"`` only; a UTF-8 byte-order mark at the start is ignored.

    Args:
        path: the file.

    Returns:
        ``(line_number, record)`` pairs, line numbers starting at 1.

    Raises:
        DataFormatError: a line is not valid JSON, not a JSON object or repeats a key, or a byte is not
            UTF-8 (the message gives file and line).

    Examples:
        >>> import pathlib, tempfile
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.json"
        >>> _ = bad.write_text('{"a": 1}\\n{"a": \\n')
        >>> try:
        ...     read_jsonl(bad)
        ... except DataFormatError as error:
        ...     print(str(error).split("bad.json, ")[1][:22])
        line 2: not valid JSON
    """
    return _parse_jsonl(_read_text(path), path)


def read_json_file(path: Path) -> tuple[str, list[tuple[int, dict]]]:
    """Read records from a ``.json`` / ``.jsonl`` file, and say how they are numbered.

    Returns:
        ``("line", pairs)`` for JSON Lines (1-based line numbers) or ``("record", pairs)`` for one JSON array
        of objects (1-based positions in the array).

    Raises:
        DataFormatError: invalid JSON, a repeated key, an element that is not an object or a byte that is not
            UTF-8; the message names the file and the line or record. A UTF-8 byte-order mark is ignored.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = path.write_text('[{"a": 1},\\n {"a": 2}]')
        >>> read_json_file(path)
        ('record', [(1, {'a': 1}), (2, {'a': 2})])
    """
    text = _read_text(path)
    if text.lstrip(" \t\n\r").startswith("["):
        return "record", _parse_json_array(text, path)
    return "line", _parse_jsonl(text, path)


def read_json_records(path: Path) -> list[tuple[int, dict]]:
    """Read records from a ``.json`` / ``.jsonl`` file: JSON Lines, or one JSON array of objects.

    Returns ``(position, record)`` pairs: the line number for JSON Lines, the 1-based array index for an
    array (see :func:`read_json_file`, which also says which).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = path.write_text('[{"a": 1}, {"a": 2}]')
        >>> [r["a"] for _, r in read_json_records(path)]
        [1, 2]
    """
    return read_json_file(path)[1]


def llm_output_files(llm_dir: Path, split: str) -> list[Path]:
    """The files ``<split>_CoT_<i>.json`` in ``llm_dir``, in numeric order of ``i`` (10 after 9).

    Raises:
        DataFormatError: the numbers do not run 0, 1, 2, ... without a gap, or two files have the same number
            (``test_CoT_1.json`` and ``test_CoT_01.json``).

    Examples:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for i in (0, 1, 10, 2, 3, 4, 5, 6, 7, 8, 9):
        ...     _ = (d / f"test_CoT_{i}.json").write_text("[]")
        >>> [p.name for p in llm_output_files(d, "test")][-3:]
        ['test_CoT_8.json', 'test_CoT_9.json', 'test_CoT_10.json']
    """
    if not llm_dir.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(split)}_CoT_(\d+)\.json")
    numbered = {}
    for path in llm_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            number = int(match.group(1))
            if number in numbered:
                first, second = sorted((numbered[number].name, path.name))
                raise DataFormatError(
                    f"{llm_dir}: {first} and {second} both have the number {number}; expected one file "
                    f"{split}_CoT_<i>.json per number"
                )
            numbered[number] = path
    indices = sorted(numbered)
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise DataFormatError(
            f"{llm_dir}: the files {split}_CoT_<i>.json must be numbered 0, 1, 2, ... without gaps; "
            f"found {indices}, missing {[f'{split}_CoT_{i}.json' for i in missing]}"
        )
    return [numbered[i] for i in indices]


def read_llm_outputs(files: list[Path]) -> dict[Path, list[str]]:
    """Read the JSON arrays of strings in ``files``, keeping their order.

    Returns:
        ``{file: strings}`` in the order of ``files``; concatenating the values aligns them with the records.

    Raises:
        DataFormatError: a file is not valid JSON, not an array, or holds something other than a string.

    Examples:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "test_CoT_0.json").write_text('["a", "b"]')
        >>> list(read_llm_outputs([d / "test_CoT_0.json"]).values())
        [['a', 'b']]
    """
    arrays: dict[Path, list[str]] = {}
    for path in files:
        items = _load_json(path, "one JSON array of strings")
        if not isinstance(items, list):
            raise DataFormatError(f"{path}: expected one JSON array of strings, got {type(items).__name__}")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise DataFormatError(
                    f"{path}, array element {index}: expected a string, got {type(item).__name__}"
                )
        arrays[path] = items
    return arrays
