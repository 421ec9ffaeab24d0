"""Load your own chain-of-thought data (input, label, rationale) from a file or a ``datasets`` object.

Examples:
    >>> from datasets import Dataset
    >>> data = load_cot_dataset(Dataset.from_dict({"q": ["2 + 2 ?"], "a": ["4"], "why": ["2 + 2 = 4 ."]}),
    ...                         input_column="q", label_column="a", rationale_column="why")
    >>> data["train"][0]
    {'input': '2 + 2 ?', 'label': '4', 'rationale': '2 + 2 = 4 .'}
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, overload

from .jsonfiles import DataFormatError, read_json_file, shown_value
from .report import CoTLoadReport, CoTSplitReport
from .textfiles import read_csv_records

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from datasets import ClassLabel, Dataset, DatasetDict

__all__ = ["SUPPORTED_SUFFIXES", "MissingColumnError", "load_cot_dataset", "read_table_file"]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")
"""File types :func:`load_cot_dataset` reads."""

PathLike = Union[str, "os.PathLike[str]"]

_TEXT_DTYPES = ("string", "large_string")


Locate = Callable[[int], str]
"""Row index (0-based) -> where the row is in its file (``"line 5"``, ``"record 3"``)."""


class MissingColumnError(ValueError):
    """:func:`load_cot_dataset`'s refusal of a column name (``input_column=``, ``label_column=``,
    ``rationale_column=``) that names no column of the data. A ``ValueError``, as before it had a class.

    Attributes:
        where: the data the column is missing from, as the message names it: a file's path (as given),
            ``"the Dataset"``, ``"split 'train' of the DatasetDict"`` or, for a ``Dataset`` in a mapping of
            splits, ``"split 'train'"``.
        column: the column name asked for (``"question"``).
        target: the column it was asked for: ``"input"``, ``"label"`` or ``"rationale"``.
        columns: the columns the data has.

    Examples:
        >>> from datasets import Dataset
        >>> data = Dataset.from_dict({"input": ["1 + 1 ?"], "label": ["2"], "rationale": ["1 + 1 = 2 ."]})
        >>> try:
        ...     load_cot_dataset(data, input_column="question")
        ... except MissingColumnError as error:
        ...     print(error.where, error.column, error.target, error.columns)
        the Dataset question input ['input', 'label', 'rationale']
    """

    def __init__(self, where: str, column: str, target: str, columns: Sequence[str]) -> None:
        self.where, self.column, self.target, self.columns = where, column, target, list(columns)
        super().__init__(
            f"{where}: no column {column!r} (for {target!r}); the columns are {self.columns}. "
            f"Pass {target}_column= (--{target}-column on the command line) to name the right one"
        )

    def __reduce__(self) -> tuple[type[MissingColumnError], tuple[str, str, str, list[str]], dict[str, Any]]:
        # pickled (between processes) and copied with its arguments, not the message its __init__ does not
        # take, and its attributes (those a subclass adds, add_note()'s notes)
        return type(self), (self.where, self.column, self.target, self.columns), self.__dict__


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _json_columns(path: Path, unit: str, records: list[tuple[int, dict]]) -> dict[str, list[Any]]:
    """Records -> columns (a missing key is null); a field whose type changes between records is an error."""
    columns: dict[str, list[Any]] = {}
    for _, record in records:
        for key in record:
            columns.setdefault(key, [])
    first: dict[str, tuple[str, int]] = {}
    for number, record in records:
        for key, values in columns.items():
            value = record.get(key)
            values.append(value)
            if value is None:
                continue
            kind = _kind(value)
            seen = first.setdefault(key, (kind, number))
            if seen[0] != kind:
                raise DataFormatError(
                    f"{path}: could not build a table from its records: at {unit} {number} the field {key!r} "
                    f"holds {kind} ({shown_value(value)}) but at {unit} {seen[1]} {seen[0]}; expected the same type "
                    "in every record (quote numbers to make them text)"
                )
    return columns


def _builds(values: list[Any]) -> Exception | None:
    """The error Arrow raises for a column of ``values``, or None when it stores them."""
    from datasets import Dataset

    try:
        Dataset.from_dict({"column": values})
    except Exception as error:  # pyarrow raises ArrowInvalid, ArrowTypeError, OverflowError, ...
        return error
    return None


def _unstorable(path: Path, unit: str, numbers: list[int], columns: dict[str, list[Any]]) -> str | None:
    """Why Arrow cannot build a table of ``columns``, naming the field and the first record it fails at
    (by bisection over the records: a prefix that fails makes every longer one fail); None if no single
    column fails.

    Examples:
        >>> _unstorable(Path("d.jsonl"), "line", [1, 3], {"n": [1, 2**64]}).split(", which")[0]
        "d.jsonl, line 3: the field 'n' holds 18446744073709551616"
    """
    for key, values in columns.items():
        error = _builds(values)
        if error is None:
            continue
        good, bad = 0, len(values)  # values[:good] builds, values[:bad] does not
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if _builds(values[:middle]) is None else (good, middle)
        index = bad - 1
        value = values[index]
        alone = _builds([value])
        where = f"{path}, {unit} {numbers[index]}: the field {key!r} holds {shown_value(value)}"
        if alone is not None:
            return (
                f"{where}, which a table cannot store ({alone}); expected text, a whole number within 64 "
                "bits, a float, true/false, or lists (of one type) and objects of these (quote numbers to make "
                "them text)"
            )
        error = _builds(values[: index + 1]) or error
        return (
            f"{where}, which does not fit the type of that field in the records before it ({error}); "
            "expected the same type in every record, inside lists and objects too"
        )
    return None


def _not_utf8(values: list[bytes | None], column: str, where: str, locate: Locate | None) -> str | None:
    """Why ``values`` (the bytes of a text or binary column) are not UTF-8 text, naming the first row whose
    bytes are not, its field and the byte; None when every value decodes.

    Examples:
        >>> _not_utf8([b"ok", b"caf\\xe9"], "input", "d.parquet", lambda index: f"record {index + 1}")
        "d.parquet, record 2: the field 'input' holds byte 0xe9 at character 4, which is not UTF-8; expected UTF-8 text"
        >>> _not_utf8([b"ok", None], "input", "d.parquet", None) is None
        True
    """
    for index, value in enumerate(values):
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as error:
            at = locate(index) if locate is not None else f"row {index}"
            character = len(value[: error.start].decode("utf-8")) + 1
            return (
                f"{where}, {at}: the field {column!r} holds byte 0x{value[error.start]:02x} at character "
                f"{character}, which is not UTF-8; expected UTF-8 text"
            )
    return None


def _check_parquet_text(table: pa.Table, path: Path, locate: Locate) -> None:
    """Refuse a Parquet table whose text columns hold bytes that are not UTF-8 (Arrow reads them without a
    check; reading a value then fails with a bare ``UnicodeDecodeError``), naming the record and field."""
    import pyarrow as pa

    try:
        table.validate(full=True)
    except pa.ArrowInvalid as error:
        texts = [
            name
            for name, kind in zip(table.column_names, table.schema.types)
            if pa.types.is_string(kind) or pa.types.is_large_string(kind)
        ]
        found = (
            _not_utf8(table.column(name).cast(pa.large_binary()).to_pylist(), name, str(path), locate)
            for name in texts
        )
        raise DataFormatError(
            next((problem for problem in found if problem), None)
            or f"{path}: the table holds values Arrow cannot read ({error}); expected UTF-8 text in its text "
            "fields"
        ) from error


def read_table_file(path: Path) -> tuple[Dataset, Locate]:
    """Read one JSON Lines / JSON / CSV / Parquet file into a Dataset, strictly, with a record locator.

    Returns ``(dataset, locate)``: ``locate(i)`` words where row ``i`` is in the file (``"line 3"`` for
    JSON Lines and CSV, ``"record 2"`` for a JSON array or Parquet), for error messages.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: an empty file, a duplicated key or header, a field whose type changes, bad bytes.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> _ = path.write_text('{"input": "x", "label": "y"}' + chr(10))
        >>> dataset, locate = read_table_file(path)
        >>> dataset.num_rows, locate(0)
        (1, 'line 1')
    """
    from datasets import Dataset

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        unit, records = read_json_file(path)
        if not records:
            shape = "an empty JSON array" if unit == "record" else "no JSON objects"
            raise DataFormatError(
                f"{path}: the file is empty ({shape}); expected records with input and label"
            )
        columns = _json_columns(path, unit, records)
        numbers = [number for number, _ in records]
        try:
            dataset = Dataset.from_dict(columns)
        except Exception as error:  # pyarrow: e.g. lists whose elements mix types, a number beyond 64 bits
            raise DataFormatError(
                _unstorable(path, unit, numbers, columns)
                or f"{path}: could not build a table from its records ({error}); "
                "expected each field to hold the same type in every record"
            ) from error
        return dataset, lambda index: f"{unit} {numbers[index]}"
    if suffix == ".csv":
        header, rows = read_csv_records(path)
        if not rows:
            raise DataFormatError(f"{path}: the file has a header line but no records")
        lines = [line for line, _ in rows]
        dataset = Dataset.from_dict({name: [row[i] for _, row in rows] for i, name in enumerate(header)})
        return dataset, lambda index: f"line {lines[index]}"
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        from datasets.table import InMemoryTable

        try:
            table = pq.read_table(path)
        except Exception as error:
            raise DataFormatError(f"{path}: not a readable Parquet file ({error})") from error
        if table.num_rows == 0:
            raise DataFormatError(
                f"{path}: the file is empty (no records); expected records with input and label"
            )

        def locate(index: int) -> str:
            return f"record {index + 1}"

        _check_parquet_text(table, path, locate)
        return Dataset(InMemoryTable(table)), locate
    raise ValueError(
        f"{str(path)!r}: unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _as_splits(
    source: Any, split: str
) -> tuple[dict[str, Dataset], dict[str, str], dict[str, Locate | None]]:
    """Return split -> Dataset, split -> where it came from, and split -> where each row is (for messages)."""
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        names = list(source)
        return (
            dict(source),
            {name: f"split {name!r} of the DatasetDict" for name in names},
            dict.fromkeys(names),
        )
    if isinstance(source, Dataset):
        return {split: source}, {split: "the Dataset"}, {split: None}
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        dataset, locate = read_table_file(path)
        return {split: dataset}, {split: str(path)}, {split: locate}
    if isinstance(source, Mapping):
        data, where, locate = {}, {}, {}
        for name, item in source.items():
            if isinstance(item, Dataset):
                data[name], where[name], locate[name] = item, f"split {name!r}", None
            elif isinstance(item, (str, os.PathLike)):
                (data[name], locate[name]), where[name] = read_table_file(Path(item)), str(item)
            else:
                raise TypeError(
                    f"split {name!r}: expected a path or a datasets.Dataset, got {type(item).__name__}"
                )
        return data, where, locate
    raise TypeError(
        "source must be a path (.jsonl, .json, .csv, .parquet), a mapping of split names to paths, a "
        f"datasets.Dataset or a datasets.DatasetDict; got {type(source).__name__}"
    )


def as_text_column(
    dataset: Dataset, column: str, where: str, locate: Locate | None = None, *, shown_name: str | None = None
) -> Dataset:
    """``dataset`` with ``column`` as text, the same for every reader: whole numbers without a fraction or
    exponent (``7`` for 7.0, ``12345678901`` in a column that also holds 2.5), other numbers in their
    shortest form at their precision (``2.5``; ``3.8`` from a float32 column), booleans as Arrow writes them
    (``true``). NaN (a missing number) and infinity, which JSON refuses too, become null (never the text
    ``nan`` or ``inf``). A ``datasets.ClassLabel`` column
    (labels of a Hub dataset) becomes its class names; its "no label" value ``-1`` (GLUE-style test splits)
    becomes null, a missing value. The result has no format (``Dataset.with_format``) set: whatever
    format ``dataset`` had (numpy, torch, pandas, arrow), its rows read as plain Python values.

    Raises:
        ValueError: the column holds lists or objects (named with the first row that has one).
        DataFormatError: a binary column holds bytes that are not UTF-8 (names the first such row).

    Examples:
        >>> from datasets import ClassLabel, Dataset, Features
        >>> list(as_text_column(Dataset.from_dict({"label": [7.0, 2.5, float("nan")]}), "label", "x")["label"])
        ['7', '2.5', None]
        >>> nli = Features({"label": ClassLabel(names=["entailment", "neutral", "contradiction"])})
        >>> list(as_text_column(Dataset.from_dict({"label": [2, 0, -1]}, features=nli), "label", "x")["label"])
        ['contradiction', 'entailment', None]
    """
    from datasets import ClassLabel, Value

    dataset = dataset.with_format(None)  # a formatted batch holds tensors or arrays, not the values
    feature = dataset.features[column]
    if isinstance(feature, Value) and feature.dtype in _TEXT_DTYPES:
        return dataset
    if isinstance(feature, ClassLabel):
        return _class_names(dataset, column, feature)
    if not isinstance(feature, Value):
        first = next((i for i, value in enumerate(dataset[column]) if value is not None), None)
        at = f" (the first at {locate(first)})" if locate is not None and first is not None else ""
        raise ValueError(f"{where}: column {shown_name or column!r} holds {feature}{at}, expected text")
    if feature.dtype in ("binary", "large_binary"):  # Arrow's cast to text fails with "Invalid UTF8 payload"
        problem = _not_utf8(dataset[column], shown_name or column, where, locate)
        if problem:
            raise DataFormatError(problem)
    if feature.dtype.startswith("float"):  # Arrow writes 1e10 as "1e+10": an answer no metric reads back
        features = dataset.features.copy()
        features[column] = Value("string")
        dtype = feature.dtype
        return dataset.map(
            lambda values: {
                column: [
                    None if v is None or not math.isfinite(v) else _number_text(v, dtype) for v in values
                ]
            },
            input_columns=column,
            batched=True,
            features=features,
            desc=f"{column}: numbers as text",
        )
    return dataset.cast_column(column, Value("string"))


def _class_names(dataset: Dataset, column: str, feature: ClassLabel) -> Dataset:
    """A ``ClassLabel`` column as its class names; ``-1`` ("no label") and null become null."""
    from datasets import Value

    features = dataset.features.copy()
    features[column] = Value("string")
    return dataset.map(
        lambda values: {column: [None if v is None or v < 0 else feature.int2str(v) for v in values]},
        input_columns=column,
        batched=True,
        features=features,
        desc=f"{column}: class names",
    )


def _number_text(value: float, dtype: str = "float64") -> str:
    """A float of a ``dtype`` column as an answer's text: whole numbers without a fraction or exponent
    (``7``, ``10000000000``), others in the shortest form that reads back as the same number of that
    precision (``2.5``; ``3.8`` for the float32 3.7999999523..., not ``3.799999952316284``).

    Examples:
        >>> _number_text(7.0), _number_text(0.1 + 0.2), _number_text(3.799999952316284, "float32")
        ('7', '0.30000000000000004', '3.8')
    """
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if dtype in ("float16", "float32"):  # Python reads the value back as float64: numpy's text is its own
        import numpy as np

        return str(np.dtype(dtype).type(value))
    return repr(float(value))


def _standardise(
    dataset: Dataset, where: str, columns: dict[str, str], locate: Locate | None
) -> tuple[Dataset, CoTSplitReport]:
    dataset = dataset.with_format(None)  # read values, not the tensors or arrays of a format
    existing = dataset.column_names
    for target, column in columns.items():
        if column not in existing:
            raise MissingColumnError(where, column, target, existing)
    renames = {column: target for target, column in columns.items() if column != target}
    clashes = [target for column, target in renames.items() if target in existing and target not in renames]
    if clashes:
        raise ValueError(
            f"{where}: cannot rename {[c for c, t in renames.items() if t in clashes]} to {clashes}: a column "
            f"named {clashes[0]!r} already exists; rename or remove it first"
        )
    if renames:
        dataset = dataset.rename_columns(renames)
    from datasets import ClassLabel

    class_labels = {target for target in columns if isinstance(dataset.features[target], ClassLabel)}
    for target in columns:
        dataset = as_text_column(dataset, target, where, locate, shown_name=columns[target])

    for target in ("input", "label"):
        for index, value in enumerate(dataset[target]):
            if value is None or (target == "input" and not value.strip()):
                at = locate(index) if locate is not None else None
                place = f"; the record is at {at} of the file (rows count from 0)" if at else ""
                what = "missing (null)" if value is None else f"empty ({value!r})"
                if value is None and target in class_labels:
                    what = "missing (null, or the ClassLabel value -1: no label)"
                raise ValueError(
                    f"{where}, row {index}: {columns[target]!r} is {what}{place}; expected text"
                    + ("" if value is None else ": an input the student could learn from")
                )
    rationales = dataset["rationale"]
    missing = sum(1 for r in rationales if r is None or not r.strip())
    if any(r is None for r in rationales):
        dataset = dataset.map(
            lambda batch: {"rationale": ["" if r is None else r for r in batch]},
            input_columns="rationale",
            batched=True,
            desc="null rationales -> ''",
        )
    return dataset, CoTSplitReport(records=dataset.num_rows, missing_rationales=missing)


def _describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Mapping) and not hasattr(source, "column_names"):
        items = (
            f"{name}: {item if isinstance(item, (str, os.PathLike)) else type(item).__name__}"
            for name, item in source.items()
        )
        return "{" + ", ".join(items) + "}"
    return type(source).__name__


@overload
def load_cot_dataset(
    source: Any,
    *,
    input_column: str = ...,
    label_column: str = ...,
    rationale_column: str = ...,
    split: str = ...,
    return_report: Literal[False] = ...,
) -> DatasetDict: ...


@overload
def load_cot_dataset(
    source: Any,
    *,
    input_column: str = ...,
    label_column: str = ...,
    rationale_column: str = ...,
    split: str = ...,
    return_report: Literal[True],
) -> tuple[DatasetDict, CoTLoadReport]: ...


def load_cot_dataset(
    source: PathLike | Mapping[str, Any] | Dataset | DatasetDict,
    *,
    input_column: str = "input",
    label_column: str = "label",
    rationale_column: str = "rationale",
    split: str = "train",
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, CoTLoadReport]:
    """Load a chain-of-thought dataset of your own as a ``DatasetDict`` with ``input``, ``label``, ``rationale``.

    ``source`` can be:

    - a path to a ``.jsonl`` / ``.json`` file (JSON Lines, or one JSON array of objects), a ``.csv`` file
      (every cell read as text; an empty cell is an empty string) or a ``.parquet`` file; it becomes the
      split named ``split``;
    - a mapping of split names to such paths (or to ``Dataset`` objects), e.g.
      ``{"train": "train.jsonl", "test": "test.jsonl"}``;
    - a ``datasets.Dataset`` (becomes the split ``split``) or a ``datasets.DatasetDict``.

    The three named columns are renamed to ``input``, ``label`` and ``rationale`` and cast to text (so a
    numeric label ``7`` becomes ``"7"``, and a ``datasets.ClassLabel`` label its class name, such as
    ``"entailment"``); other columns are kept. A missing column is an error that lists the columns there are;
    a null (or NaN) input or label is an error naming the row, and so is a ``ClassLabel``'s "no label" ``-1``
    (the unlabelled test split of a GLUE-style dataset: load only the splits that have labels). Rationales that
    are null, empty or blank are counted per split (and logged as a warning on the ``hf_cotmi`` logger); nulls
    become ``""``. A ``Dataset`` with a format (``with_format("torch")``, ...) is read as plain values; the
    returned splits have no format set.
    :func:`hf_cotmi.prepare_dss_features` then keeps, drops or refuses them (its ``empty_rationale``).

    Args:
        source: the data (see above).
        input_column: the column holding the model input.
        label_column: the column holding the answer.
        rationale_column: the column holding the teacher's rationale.
        split: the split name for a single file or ``Dataset``.
        return_report: also return a :class:`~hf_cotmi.data.report.CoTLoadReport`.

    Returns:
        A ``DatasetDict``, or ``(DatasetDict, CoTLoadReport)`` when ``return_report`` is True.

    Raises:
        FileNotFoundError: a path does not exist.
        MissingColumnError: (a ``ValueError``) a column name that names no column of the data.
        ValueError: a null input or label, an empty input, an unsupported file type or a malformed file
            (``hf_cotmi.data.jsonfiles.DataFormatError``, with file and line).
        TypeError: ``source`` is of no supported kind.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "cot.jsonl"
        >>> _ = path.write_text('{"question": "1 + 2 ?", "answer": 3, "rationale": "1 + 2 = 3 ."}\\n'
        ...                     '{"question": "2 + 2 ?", "answer": 4, "rationale": ""}\\n')
        >>> data, report = load_cot_dataset(path, input_column="question", label_column="answer",
        ...                                 return_report=True)
        >>> data["train"][0]["label"], report.splits["train"].missing_rationales
        ('3', 1)
        >>> from datasets import ClassLabel, Dataset, Features, Value
        >>> nli = Features({"input": Value("string"), "label": ClassLabel(names=["yes", "no"]),
        ...                 "rationale": Value("string")})
        >>> load_cot_dataset(Dataset.from_dict({"input": ["a ?"], "label": [1], "rationale": ["b ."]},
        ...                                    features=nli))["train"][0]["label"]
        'no'
    """
    from datasets import DatasetDict

    columns = {"input": input_column, "label": label_column, "rationale": rationale_column}
    for argument, value in columns.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{argument}_column={value!r} must be a column name")
    if len(set(columns.values())) != len(columns):
        raise ValueError(f"input_column, label_column and rationale_column must differ; got {columns}")
    splits, where, locate = _as_splits(source, split)
    report = CoTLoadReport(source=_describe_source(source))
    result = {}
    for name, dataset in splits.items():
        result[name], report.splits[name] = _standardise(dataset, where[name], columns, locate[name])
        counts = report.splits[name]
        if counts.missing_rationales:
            logger.warning(
                "%s: %d of %d records have an empty or missing rationale (%r)",
                where[name],
                counts.missing_rationales,
                counts.records,
                rationale_column,
            )
    data = DatasetDict(result)
    return (data, report) if return_report else data
