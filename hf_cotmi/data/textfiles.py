"""Reading text files line by line, with errors that name the file and the 1-based line, and writing one
whole or not at all.

- :func:`read_text_file`: UTF-8 text; a leading UTF-8 byte-order mark (BOM) is removed, and a byte that is
  not UTF-8 is an error naming the file, line and column (in characters, as an editor counts them).
- :func:`split_lines`: lines end at ``"\\n"`` only (and a ``"\\r"`` before it), never at the other
  separators ``str.splitlines()`` knows (U+2028, U+2029, U+0085, form feed, ...), which may sit inside
  a line of text.
- :func:`read_csv_records`: a CSV file with a header line; duplicate or empty headers and rows with the
  wrong number of fields are errors naming the line (the header is line 1).
- :func:`read_input_lines`: the input texts of ``hf-cotmi predict --input-file`` (one per line, or JSON
  Lines with an ``input`` field); :func:`read_input_records` gives each with its line and its JSON fields
  (a multiple-choice question's ``choices``).
- :func:`write_atomically`, :func:`write_text_atomically`: a file (any writer's, or UTF-8 text) made
  through a temporary file beside the target and a rename, so a reader sees the old file or the new one,
  never a partial one.

Examples:
    >>> split_lines("one\\u2028line\\r\\ntwo\\n")
    ['one\\u2028line', 'two']
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Union

from .jsonfiles import DataFormatError, check_duplicate_keys

__all__ = [
    "read_text_file",
    "split_lines",
    "read_csv_records",
    "read_input_lines",
    "InputRecord",
    "read_input_records",
    "write_atomically",
    "write_text_atomically",
]

PathLike = Union[str, "os.PathLike[str]"]


def decode_text(data: bytes, where: str) -> str:
    """Decode UTF-8 ``data`` read from ``where``, without a leading BOM; an error names the line and column.

    Examples:
        >>> decode_text(codecs.BOM_UTF8 + b"a,b\\n", "x.csv")
        'a,b\\n'
        >>> try:
        ...     decode_text(b"ok\\nbad \\xff\\n", "x.jsonl")
        ... except DataFormatError as error:
        ...     print(error)
        x.jsonl, line 2: byte 0xff at column 5 is not UTF-8; expected a UTF-8 text file
        >>> try:  # the column counts characters: "é" is one, though two bytes
        ...     decode_text("ok\\nbé ".encode() + b"\\xff", "x.jsonl")
        ... except DataFormatError as error:
        ...     print(error)
        x.jsonl, line 2: byte 0xff at column 4 is not UTF-8; expected a UTF-8 text file
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        # the bytes before the first bad one are UTF-8: count the characters they hold, as an editor does
        column = len(data[line_start : error.start].decode("utf-8")) + 1
        raise DataFormatError(
            f"{where}, line {line}: byte 0x{data[error.start]:02x} at column {column} is not UTF-8; "
            "expected a UTF-8 text file"
        ) from None


def read_text_file(path: PathLike) -> str:
    """The text of a UTF-8 file, without a leading BOM.

    Raises:
        DataFormatError: a byte is not UTF-8 (the message gives the file, line and column).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = path.write_bytes(b"\\xef\\xbb\\xbfhello\\n")
        >>> read_text_file(path)
        'hello\\n'
    """
    with open(path, "rb") as handle:
        return decode_text(handle.read(), os.fspath(path))


def split_lines(text: str) -> list[str]:
    """Split ``text`` at ``"\\n"`` (a ``"\\r"`` before it is dropped); no empty last line for a final newline.

    Examples:
        >>> split_lines("a\\x0cb\\u2029c\\n\\nd")
        ['a\\x0cb\\u2029c', '', 'd']
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_csv_records(path: PathLike) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a CSV file: a header line, then one record per row; every cell is text.

    Returns:
        ``(header, [(line, cells), ...])`` where ``line`` is the file line the record starts on (the header
        is line 1; a quoted cell may span lines). Blank lines are skipped.

    Raises:
        DataFormatError: the file is empty, the header has an empty or duplicated name, a record has more or
            fewer fields than the header, or the CSV is malformed; the message names the file and line.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
        >>> _ = path.write_text('input,label\\n"two\\nlines",7\\n3 ?,3\\n')
        >>> read_csv_records(path)
        (['input', 'label'], [(2, ['two\\nlines', '7']), (4, ['3 ?', '3'])])
        >>> _ = path.write_text("input,label,label\\n1,2,3\\n")
        >>> try:
        ...     read_csv_records(path)
        ... except DataFormatError as error:
        ...     print(str(error).split("d.csv, ")[1])
        line 1: the header 'label' appears twice (columns 2 and 3); expected each column name once
    """
    where = os.fspath(path)
    text = read_text_file(path)
    if not text.strip():
        raise DataFormatError(f"{where}: the file is empty; expected a CSV header line and records")
    # csv's default cell limit (131,072 characters) would refuse a long rationale; no cell is longer than the file
    csv.field_size_limit(max(csv.field_size_limit(), min(len(text), sys.maxsize)))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    next_line = 1
    try:
        for row in reader:
            line, next_line = next_line, reader.line_num + 1
            if not row:
                continue
            if header is None:
                header = _checked_header(row, where, line)
                continue
            if len(row) != len(header):
                raise DataFormatError(
                    f"{where}, line {line}: {len(row)} fields, but the header (line 1) names {len(header)}; "
                    "expected one field per column (quote cells that hold commas)"
                )
            records.append((line, row))
    except csv.Error as error:
        raise DataFormatError(f"{where}, line {reader.line_num}: not valid CSV ({error})") from None
    assert header is not None
    return header, records


def _checked_header(row: list[str], where: str, line: int) -> list[str]:
    seen: dict[str, int] = {}
    for column, name in enumerate(row, start=1):
        if not name.strip():
            raise DataFormatError(
                f"{where}, line {line}: the header of column {column} is empty; expected a name for every column"
            )
        if name in seen:
            raise DataFormatError(
                f"{where}, line {line}: the header {name!r} appears twice (columns {seen[name]} and {column}); "
                "expected each column name once"
            )
        seen[name] = column
    return row


def read_input_lines(path_or_stdin: PathLike | IO[bytes] | IO[str]) -> list[str]:
    """The input texts of a file for ``hf-cotmi predict --input-file``: one input per line.

    A line is text up to ``"\\n"`` (see :func:`split_lines`: U+2028 and other separators stay inside the
    input); surrounding whitespace is stripped and blank lines are skipped. A line that starts with ``{`` is
    a JSON object whose ``input`` field is the text (JSON Lines). :func:`read_input_records` also gives each
    input's line and the other fields of its JSON object.

    Args:
        path_or_stdin: a path, ``"-"`` for standard input, or an open file (bytes or text).

    Returns:
        The texts, in file order.

    Raises:
        FileNotFoundError: the path does not exist.
        DataFormatError: a byte is not UTF-8, or a JSON line is invalid, has a duplicated key or has no text
            ``input`` field (or a blank one); the message names the file (or standard input) and the line.

    Examples:
        >>> import io
        >>> read_input_lines(io.BytesIO('a\\u2028b\\n\\n{"input": "c"}\\n'.encode()))
        ['a\\u2028b', 'c']
    """
    return [record.text for record in read_input_records(path_or_stdin)]


@dataclass(frozen=True)
class InputRecord:
    """One input of ``hf-cotmi predict``: its text, where it came from, and its JSON object's fields.

    Attributes:
        text: the input text (a plain line stripped, or a JSON object's ``input``).
        where: where it came from, for messages: ``"questions.jsonl, line 3"``, ``"text argument 1"``.
        fields: the whole JSON object of a JSON Lines input (``input`` included, and e.g. a multiple-choice
            question's ``choices``); empty for a plain line or a text given as an argument.

    Examples:
        >>> InputRecord("where do fish live?", "text argument 1").fields
        {}
    """

    text: str
    where: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def read_input_records(
    path_or_stdin: PathLike | IO[bytes] | IO[str], input_field: str = "input"
) -> list[InputRecord]:
    """The inputs of a file for ``hf-cotmi predict --input-file``, each with its line and JSON fields.

    Lines are read as :func:`read_input_lines` reads them (plain text, or a JSON object with a text
    ``input``); a JSON object's other fields (a multiple-choice question's ``choices``) are kept in
    :attr:`InputRecord.fields`.

    Args:
        path_or_stdin: a path, ``"-"`` for standard input, or an open file (bytes or text).
        input_field: the field holding a JSON object's text, where it has one (the input column a run was
            trained with, e.g. ``question``); an object without it is read by its ``input`` field.

    Returns:
        One :class:`InputRecord` per input, in file order; ``where`` names the file and the 1-based line.

    Raises:
        FileNotFoundError: the path does not exist.
        DataFormatError: as :func:`read_input_lines`.

    Examples:
        >>> import io
        >>> plain, record = read_input_records(io.StringIO('sea?\\n{"input": "q", "choices": ["a", "b"]}\\n'))
        >>> plain.text, plain.fields, record.where, record.fields["choices"]
        ('sea?', {}, 'the input stream, line 2', ['a', 'b'])
        >>> read_input_records(io.StringIO('{"question": "q", "answer": "a"}\\n'), input_field="question")[0].text
        'q'
    """
    where, text = _input_text(path_or_stdin)
    records = []
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        located = f"{where}, line {number}"
        if not line.lstrip().startswith("{"):
            records.append(InputRecord(line.strip(), located))
            continue
        try:
            record = json.loads(line, object_pairs_hook=check_duplicate_keys)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{located}: not valid JSON ({error.msg})") from None
        except DataFormatError as error:
            raise DataFormatError(f"{located}: {error}") from None
        field_name = input_field if input_field in record else "input"
        if not isinstance(record.get(field_name), str):  # a line that starts with "{" is an object
            names = " or ".join(repr(name) for name in dict.fromkeys((input_field, "input")))
            raise DataFormatError(
                f"{located}: expected a JSON object with a text field {names}; {_what_it_has(record)}"
            )
        # a blank plain line separates inputs; a blank JSON input is an error of its record
        if not record[field_name].strip():
            raise DataFormatError(f"{located}: {field_name!r} is blank; expected the text to predict from")
        records.append(InputRecord(record[field_name], located, record))
    return records


def _input_text(path_or_stdin: PathLike | IO[bytes] | IO[str]) -> tuple[str, str]:
    """``(where, text)`` of a path, ``"-"`` (standard input) or an open file, decoded as UTF-8."""
    if isinstance(path_or_stdin, (str, os.PathLike)) and os.fspath(path_or_stdin) == "-":
        path_or_stdin = sys.stdin
    if isinstance(path_or_stdin, (str, os.PathLike)):
        where = os.fspath(path_or_stdin)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"{where!r} does not exist or is not a file")
        return where, read_text_file(where)
    stream = path_or_stdin
    where = "standard input" if stream is sys.stdin else str(getattr(stream, "name", "the input stream"))
    stream = getattr(stream, "buffer", stream)  # read bytes where possible, to decode them ourselves
    data = stream.read()
    return where, decode_text(data, where) if isinstance(data, bytes) else data.removeprefix("\ufeff")


def _what_it_has(record: dict) -> str:
    """What a JSON object holds instead of a text ``input``: its ``input`` value, or its fields."""
    if "input" in record:
        return f"its 'input' is {record['input']!r}"
    if not record:
        return "it has no fields"
    return "it has " + ", ".join(repr(key) for key in record)


def write_atomically(path: PathLike, write: Callable[[str], object]) -> None:
    """Make ``path`` whole or not at all: ``write(temporary)`` fills a new temporary file beside it, which
    then replaces ``path`` in one rename.

    The temporary name is unique (``.<name>.<random>.tmp``), so processes writing the same file at once do
    not collide; whatever stops ``write`` or the rename (a full disk, Ctrl-C) leaves the old file as it was,
    or none, and no temporary file behind.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "plot.png"
        >>> write_atomically(path, lambda temporary: pathlib.Path(temporary).write_bytes(b"PNG"))
        >>> path.read_bytes(), [p.name for p in path.parent.iterdir()]
        (b'PNG', ['plot.png'])
    """
    directory, name = os.path.split(os.fspath(path))
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_text_atomically(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, whole or not at all (:func:`write_atomically`), synced to disk
    before the rename; the temporary file is new, with the permissions a new file gets.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
        >>> write_text_atomically(path, "{}\\n"); path.read_text(), [p.name for p in path.parent.iterdir()]
        ('{}\\n', ['results.json'])
    """

    def write(temporary: str) -> None:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    write_atomically(path, write)
