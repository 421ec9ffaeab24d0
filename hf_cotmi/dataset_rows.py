"""Row counting and row slicing of the dataset forms :func:`~hf_cotmi.confidence.label_confidences` accepts.

Those forms are a ``datasets.Dataset``, a dict of equally long columns and a list of row dicts. The
functions here treat all three alike, so that a caller (the ECE callback sharing its evaluation set
between processes, for one) need not know which form it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["num_rows", "row_range"]


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
