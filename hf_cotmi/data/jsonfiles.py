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
import re
from pathlib import Path

__all__ = ["DataFormatError", "read_jsonl", "read_json_records", "llm_output_files", "read_llm_outputs"]


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file (and line or record).

    Examples:
        >>> issubclass(DataFormatError, ValueError)
        True
    """


def _load_json(path: Path, expected: str) -> object:
    """The parsed content of a whole-file JSON document; a syntax error names the file, line and ``expected``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno}); expected {expected}"
        ) from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Read a JSON Lines file: one JSON object per line; blank lines are skipped.

    Args:
        path: the file.

    Returns:
        ``(line_number, record)`` pairs, line numbers starting at 1.

    Raises:
        DataFormatError: a line is not valid JSON or not a JSON object (the message gives file and line).

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
    records: list[tuple[int, dict]] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(
                    f"{path}, line {line_number}: not valid JSON ({error.msg} at column {error.colno}); "
                    "expected one JSON object per line (JSON Lines)"
                ) from None
            if not isinstance(record, dict):
                raise DataFormatError(
                    f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}"
                )
            records.append((line_number, record))
    return records


def read_json_records(path: Path) -> list[tuple[int, dict]]:
    """Read records from a ``.json`` / ``.jsonl`` file: JSON Lines, or one JSON array of objects.

    Returns ``(position, record)`` pairs: the line number for JSON Lines, the 1-based array index for an
    array.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = path.write_text('[{"a": 1}, {"a": 2}]')
        >>> [r["a"] for _, r in read_json_records(path)]
        [1, 2]
    """
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
    if not head.startswith("["):
        return read_jsonl(path)
    items = _load_json(path, "a JSON array of objects or JSON Lines")
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DataFormatError(
                f"{path}, record {index}: expected a JSON object, got {type(item).__name__}"
            )
    return list(enumerate(items, start=1))


def llm_output_files(llm_dir: Path, split: str) -> list[Path]:
    """The files ``<split>_CoT_<i>.json`` in ``llm_dir``, in numeric order of ``i`` (10 after 9).

    Raises:
        DataFormatError: the numbers do not run 0, 1, 2, ... without a gap.

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
            numbered[int(match.group(1))] = path
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
