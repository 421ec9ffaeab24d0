"""Row counting and row slicing of the dataset forms :func:`~hf_cotmi.confidence.label_confidences` accepts.

Those forms are a ``datasets.Dataset``, a dict of equally long columns and a list of row dicts. The
functions here treat all three alike, so that a caller (the ECE callback sharing its evaluation set
between processes, for one) need not know which form it was given; :func:`sized_rows` reads an iterable
dataset (``datasets.IterableDataset``, which the Trainer also evaluates) into the first or the third.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["num_rows", "row_range", "sized_rows"]


def num_rows(dataset: Any) -> int:
    """The number of rows of a ``datasets.Dataset``, a dict of columns or a list of row dicts.

    Args:
        dataset: a ``datasets.Dataset``, a mapping of column name to column, or a sequence of row dicts.

    Returns:
        How many rows it holds (0 for a dict with no columns).

    Raises:
        ValueError: the columns of a dict have different lengths.

    Examples:
        >>> num_rows({"input": ["x0", "x1", "x2"], "label": ["0", "1", "2"]})
        3
        >>> num_rows([{"input": "x0", "label": "0"}])
        1
        >>> num_rows({"input": ["x0", "x1"], "label": ["0"]})
        Traceback (most recent call last):
        ...
        ValueError: `dataset` columns have different lengths: [1, 2]
    """
    if isinstance(dataset, Mapping):
        lengths = {len(v) for v in dataset.values()}
        if len(lengths) > 1:
            raise ValueError(f"`dataset` columns have different lengths: {sorted(lengths)}")
        return lengths.pop() if lengths else 0
    return len(dataset)


def row_range(dataset: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a ``datasets.Dataset``, a dict of columns or a list of row dicts, in its own form.

    Args:
        dataset: a ``datasets.Dataset``, a mapping of column name to column, or a sequence of row dicts.
        start: the first row kept.
        stop: the row after the last one kept (Python slice semantics).

    Returns:
        A ``datasets.Dataset`` (through ``select``), a dict of the sliced columns, or the sliced sequence:
        the same form as ``dataset``.

    Examples:
        >>> row_range({"input": ["x0", "x1", "x2"], "label": ["0", "1", "2"]}, 1, 3)
        {'input': ['x1', 'x2'], 'label': ['1', '2']}
        >>> row_range([{"label": "0"}, {"label": "1"}, {"label": "2"}], 0, 2)
        [{'label': '0'}, {'label': '1'}]
    """
    if isinstance(dataset, Mapping):
        return {name: column[start:stop] for name, column in dataset.items()}
    if hasattr(dataset, "select") and hasattr(dataset, "column_names"):
        return dataset.select(range(start, stop))
    return dataset[start:stop]


def sized_rows(dataset: Any) -> Any:
    """``dataset`` itself when it has a length and rows to index (or is a dict of columns), else its rows read
    in order into memory.

    An evaluation set the Trainer accepts need not have either: a ``datasets.IterableDataset`` (e.g.
    ``Dataset.to_iterable_dataset()`` or a streamed split) or a ``torch.utils.data.IterableDataset`` of row
    dicts, which may have a length but is read by iterating all the same. An evaluation set is finite, so it
    is read once, in its own order, into a ``datasets.Dataset`` (for a ``datasets.IterableDataset``, with
    its features when they still name its columns) or a list of row dicts, which :func:`num_rows` and
    :func:`row_range` can count and slice and accelerate can share out between processes by index.

    Args:
        dataset: a ``datasets.Dataset``, a dict of columns, a sequence of row dicts, or an iterable of row dicts.

    Returns:
        ``dataset`` unchanged when it is a mapping, or has a length and is no ``torch.utils.data.IterableDataset``;
        otherwise its rows, as a ``datasets.Dataset`` for a ``datasets.IterableDataset`` and a list otherwise.

    Raises:
        TypeError: ``dataset`` has no length and cannot be iterated either.

    Examples:
        >>> rows = sized_rows(row for row in [{"label": "0"}, {"label": "1"}])
        >>> num_rows(rows), rows[1]
        (2, {'label': '1'})
        >>> columns = {"label": ["0"]}
        >>> sized_rows(columns) is columns
        True
    """
    import torch

    if isinstance(dataset, Mapping) or (
        hasattr(dataset, "__len__") and not isinstance(dataset, torch.utils.data.IterableDataset)
    ):
        return dataset
    if not hasattr(dataset, "__iter__"):
        raise TypeError(
            f"`dataset` is a {type(dataset).__name__}, which has neither a length nor rows to iterate; expected a "
            "datasets.Dataset or IterableDataset, a dict of columns or a list of row dicts"
        )
    import datasets

    rows = list(dataset)
    if not isinstance(dataset, datasets.IterableDataset):
        return rows
    features = dataset.features
    if features is not None and rows and set(features) != set(rows[0]):
        features = None  # columns added or dropped after the features were declared: infer them
    return datasets.Dataset.from_list(rows, features=features)
