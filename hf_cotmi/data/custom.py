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
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, overload

from .jsonfiles import DataFormatError, read_json_records
from .report import CoTLoadReport, CoTSplitReport

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = ["SUPPORTED_SUFFIXES", "load_cot_dataset"]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")
"""File types :func:`load_cot_dataset` reads."""

PathLike = Union[str, "os.PathLike[str]"]

_TEXT_DTYPES = ("string", "large_string")


def _read_file(path: Path) -> Dataset:
    from datasets import Dataset

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = read_json_records(path)
        columns: dict[str, list[Any]] = {}
        for _, record in records:
            for key in record:
                columns.setdefault(key, [])
        for _, record in records:
            for key, values in columns.items():
                values.append(record.get(key))
        try:
            return Dataset.from_dict(columns)
        except Exception as error:  # pyarrow type errors: mixed types in one field
            raise DataFormatError(
                f"{path}: could not build a table from its records ({error}); "
                "expected each field to hold the same type in every record"
            ) from error
    if suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as error:
            raise DataFormatError(f"{path}: not a readable CSV file ({error})") from error
        return Dataset.from_pandas(frame, preserve_index=False)
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        from datasets.table import InMemoryTable

        try:
            table = pq.read_table(path)
        except Exception as error:
            raise DataFormatError(f"{path}: not a readable Parquet file ({error})") from error
        return Dataset(InMemoryTable(table))
    raise ValueError(
        f"{str(path)!r}: unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _as_splits(source: Any, split: str) -> tuple[dict[str, Dataset], dict[str, str]]:
    """Return split -> Dataset and split -> description of where it came from (for messages)."""
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        return dict(source), {name: f"split {name!r} of the DatasetDict" for name in source}
    if isinstance(source, Dataset):
        return {split: source}, {split: "the Dataset"}
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return {split: _read_file(path)}, {split: str(path)}
    if isinstance(source, Mapping):
        data, where = {}, {}
        for name, item in source.items():
            if isinstance(item, Dataset):
                data[name], where[name] = item, f"split {name!r}"
            elif isinstance(item, (str, os.PathLike)):
                data[name], where[name] = _read_file(Path(item)), str(item)
            else:
                raise TypeError(
                    f"split {name!r}: expected a path or a datasets.Dataset, got {type(item).__name__}"
                )
        return data, where
    raise TypeError(
        "source must be a path (.jsonl, .json, .csv, .parquet), a mapping of split names to paths, a "
        f"datasets.Dataset or a datasets.DatasetDict; got {type(source).__name__}"
    )


def _standardise(dataset: Dataset, where: str, columns: dict[str, str]) -> tuple[Dataset, CoTSplitReport]:
    from datasets import Value

    existing = dataset.column_names
    for target, column in columns.items():
        if column not in existing:
            raise ValueError(
                f"{where}: no column {column!r} (for {target!r}); the columns are {existing}. "
                f"Pass {target}_column= to name the right one"
            )
    renames = {column: target for target, column in columns.items() if column != target}
    clashes = [target for column, target in renames.items() if target in existing and target not in renames]
    if clashes:
        raise ValueError(
            f"{where}: cannot rename {[c for c, t in renames.items() if t in clashes]} to {clashes}: a column "
            f"named {clashes[0]!r} already exists; rename or remove it first"
        )
    if renames:
        dataset = dataset.rename_columns(renames)
    for target in columns:
        feature = dataset.features[target]
        if not (isinstance(feature, Value) and feature.dtype in _TEXT_DTYPES):
            if not isinstance(feature, Value):
                raise ValueError(f"{where}: column {columns[target]!r} holds {feature}, expected text")
            dataset = dataset.cast_column(target, Value("string"))

    for target in ("input", "label"):
        for index, value in enumerate(dataset[target]):
            if value is None:
                raise ValueError(
                    f"{where}, row {index}: {columns[target]!r} is missing (null); expected text"
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
    numeric label ``7`` becomes ``"7"``); other columns are kept. A missing column is an error that lists the
    columns there are; a null input or label is an error naming the row. Rationales that are null, empty
    or blank are counted per split (and logged as a warning on the ``hf_cotmi`` logger); nulls become ``""``.
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
        ValueError: a missing column, a null input or label, an unsupported file type or a malformed file
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
    """
    from datasets import DatasetDict

    columns = {"input": input_column, "label": label_column, "rationale": rationale_column}
    for argument, value in columns.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{argument}_column={value!r} must be a column name")
    if len(set(columns.values())) != len(columns):
        raise ValueError(f"input_column, label_column and rationale_column must differ; got {columns}")
    splits, where = _as_splits(source, split)
    report = CoTLoadReport(source=_describe_source(source))
    result = {}
    for name, dataset in splits.items():
        result[name], report.splits[name] = _standardise(dataset, where[name], columns)
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
