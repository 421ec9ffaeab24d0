"""Calibration metrics as pure functions: expected calibration error, average confidence, bin data.

Everything here works on plain numbers (Python sequences, NumPy arrays or torch tensors) and has no
Trainer or model imports; :mod:`hf_cotmi.confidence` turns a model into confidences and correctness,
:mod:`hf_cotmi.callbacks` and :mod:`hf_cotmi.evaluation` wire the two together.

With ``N`` predictions, confidence ``c_i`` in [0, 1] and correctness ``y_i`` in {0, 1}, split into ``M`` bins
``B_1 .. B_M``::

    ECE = sum_m |B_m| / N * | acc(B_m) - conf(B_m) |
    acc(B_m)  = mean of y_i over i in B_m
    conf(B_m) = mean of c_i over i in B_m

Empty bins contribute nothing. See ``docs/calibration.md`` for both binning schemes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Binning = Literal["uniform", "quantile"]

__all__ = [
    "CalibrationBins",
    "average_confidence",
    "check_binning",
    "expected_calibration_error",
    "refuse_text",
    "reliability_diagram_data",
]


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics behind a reliability diagram and the ECE.

    Bin ``m`` holds the predictions with ``lower[m] <= confidence < upper[m]``; the last bin also holds
    ``confidence == upper[-1]``. Empty bins have ``count == 0`` and ``NaN`` accuracy and confidence.

    Attributes:
        lower: lower edge of each bin, shape ``(M,)``.
        upper: upper edge of each bin, shape ``(M,)``.
        count: number of predictions in each bin.
        accuracy: fraction of correct predictions in each bin (``NaN`` when empty).
        confidence: mean confidence in each bin (``NaN`` when empty).
        ece: the expected calibration error over these bins.
        average_confidence: mean confidence over all predictions.
        accuracy_overall: fraction of correct predictions over all predictions.

    Examples:
        >>> bins = reliability_diagram_data([0.2, 0.9], [False, True], n_bins=2)
        >>> bins.count.tolist(), round(bins.ece, 2)
        ([1, 1], 0.15)
    """

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float
    average_confidence: float
    accuracy_overall: float

    @property
    def n_bins(self) -> int:
        """Number of bins ``M``."""
        return int(self.count.shape[0])


def refuse_text(values: Any, name: str) -> None:
    """Refuse ``values`` that hold text (``"0.7"``, ``b"1"``), also inside a probability vector: NumPy and
    Arrow would read a text that spells a number as that number, and one that does not as an error, so a
    column read as text from a file would pass or fail by chance. Anything else is left to the caller.

    Raises:
        ValueError: the first text, with its index (the vector's index for a text inside a vector).

    Examples:
        >>> refuse_text([0.9, 0.6], "confidences")
        >>> try:
        ...     refuse_text([0.9, "0.6"], "confidences")
        ... except ValueError as error:
        ...     print(error)
        `confidences` must hold numbers, not text; got '0.6' at index 1 (convert it with float() first)
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "biufc":
        return
    if hasattr(values, "tolist") and not hasattr(values, "detach"):  # NumPy array, pandas Series
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        return
    for index, value in enumerate(values):
        inner = value.tolist() if isinstance(value, np.ndarray) else value
        for item in inner if isinstance(inner, (list, tuple)) else (inner,):
            if isinstance(item, (str, bytes)):
                raise ValueError(
                    f"`{name}` must hold numbers, not text; got {item!r} at index {index} (convert it with "
                    "float() first)"
                )


def _as_float_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().double().numpy()
    refuse_text(values, name)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a 1-D sequence of numbers; got {type(values).__name__}") from err
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per prediction); got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"`{name}` is empty; expected at least one prediction")
    return array


def _check_confidences(confidences: Any) -> np.ndarray:
    conf = _as_float_array(confidences, "confidences")
    if np.isnan(conf).any():
        raise ValueError(f"`confidences` contains NaN at index {int(np.flatnonzero(np.isnan(conf))[0])}")
    bad = (conf < 0.0) | (conf > 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`confidences` must lie in [0, 1]; got {float(conf[i])!r} at index {i}")
    return conf


def _check_correct(correct: Any, n: int) -> np.ndarray:
    corr = _as_float_array(correct, "correct")
    if corr.shape[0] != n:
        raise ValueError(
            f"`correct` has {corr.shape[0]} values but `confidences` has {n}; expected one per prediction"
        )
    bad = ~np.isin(corr, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`correct` must hold booleans or 0/1; got {float(corr[i])!r} at index {i}")
    return corr


def check_binning(n_bins: int, binning: str) -> None:
    """Refuse binning options that :func:`expected_calibration_error` would refuse, before any data exists.

    Args:
        n_bins: number of bins ``M``, a positive integer.
        binning: ``"uniform"`` or ``"quantile"``.

    Raises:
        ValueError: naming ``n_bins`` or ``binning`` and what was expected.

    Examples:
        >>> check_binning(15, "quantile")
        >>> check_binning(0, "uniform")
        Traceback (most recent call last):
        ...
        ValueError: `n_bins` must be a positive integer; got 0
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"`n_bins` must be a positive integer; got {n_bins!r}")
    if binning not in ("uniform", "quantile"):
        raise ValueError(f"`binning` must be 'uniform' or 'quantile'; got {binning!r}")


def _bin_edges(conf: np.ndarray, n_bins: int, binning: str) -> np.ndarray:
    check_binning(n_bins, binning)
    n = int(n_bins)
    if binning == "uniform":
        # exact m/M (linspace gives 0.30000000000000004, which moves 0.3 down a bin)
        return np.arange(n + 1) / n
    if binning == "quantile":
        # each prediction's bin by its mid-rank (ties share one rank, so they stay together and a tied group
        # lands where the middle of its ranks falls, at the bottom of the range as at the top); an inner
        # edge is the smallest confidence at or above its bin
        ordered = np.sort(conf)
        middle = (np.searchsorted(ordered, conf, "left") + np.searchsorted(ordered, conf, "right")) / 2
        rank_bin = np.minimum((n * middle / conf.shape[0]).astype(int), n - 1)
        edges = np.ones(n + 1)
        edges[0] = 0.0
        for m in range(1, n):
            above = conf[rank_bin >= m]
            edges[m] = above.min() if above.size else 1.0
        return edges
    raise ValueError(f"`binning` must be 'uniform' or 'quantile'; got {binning!r}")


def reliability_diagram_data(
    confidences: Sequence[float] | Any,
    correct: Sequence[bool] | Any,
    *,
    n_bins: int = 10,
    binning: Binning = "uniform",
) -> CalibrationBins:
    """Bin predictions by confidence and return per-bin accuracy, confidence and counts (and the ECE).

    Args:
        confidences: confidence of each prediction, in [0, 1] (list, NumPy array or torch tensor).
        correct: whether each prediction is correct (booleans or 0/1), same length.
        n_bins: number of bins ``M``.
        binning: ``"uniform"`` for ``M`` equal-width bins ``[m/M, (m+1)/M)`` (the last one closed), or
            ``"quantile"`` for equal-mass bins by rank: each holds about ``N/M`` predictions, ties stay in one
            bin (the one the middle of their ranks falls in), and each inner edge is the smallest confidence
            of the bin above it.

    Returns:
        A :class:`CalibrationBins`.

    Raises:
        ValueError: on empty input, text (``"0.7"``), NaN, confidences outside [0, 1], correctness other
            than 0/1, mismatched lengths, ``n_bins < 1`` or an unknown ``binning``.

    Examples:
        >>> bins = reliability_diagram_data([0.1, 0.15, 0.8, 0.95], [0, 1, 1, 1], n_bins=2)
        >>> bins.accuracy.tolist(), bins.confidence.round(3).tolist()
        ([0.5, 1.0], [0.125, 0.875])
    """
    conf = _check_confidences(confidences)
    corr = _check_correct(correct, conf.shape[0])
    edges = _bin_edges(conf, n_bins, binning)
    n = edges.shape[0] - 1
    # bin m holds edges[m] <= c < edges[m + 1]; c == 1.0 goes to the last bin
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n - 1)
    count = np.bincount(index, minlength=n)
    conf_sum = np.bincount(index, weights=conf, minlength=n)
    corr_sum = np.bincount(index, weights=corr, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        bin_acc = np.where(count > 0, corr_sum / np.maximum(count, 1), np.nan)
    filled = count > 0
    ece = float(np.sum(count[filled] / conf.shape[0] * np.abs(bin_acc[filled] - bin_conf[filled])))
    return CalibrationBins(
        lower=edges[:-1].copy(),
        upper=edges[1:].copy(),
        count=count,
        accuracy=bin_acc,
        confidence=bin_conf,
        ece=min(max(ece, 0.0), 1.0),
        average_confidence=float(conf.mean()),
        accuracy_overall=float(corr.mean()),
    )


def expected_calibration_error(
    confidences: Sequence[float] | Any,
    correct: Sequence[bool] | Any,
    *,
    n_bins: int = 10,
    binning: Binning = "uniform",
) -> float:
    """Expected calibration error (ECE): the count-weighted mean gap between accuracy and confidence per bin.

    ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|``, a fraction in [0, 1] (multiply by 100 for the
    percentages papers report). With ``binning="uniform"`` this equals torchmetrics'
    ``binary_calibration_error(..., norm="l1")`` fed with the same confidences and correctness, except that
    torchmetrics puts a confidence of exactly 1.0 in a bin of its own while here it joins the last bin, and
    that confidences are binned in float64 (a float32 0.7, 0.69999999, falls in the bin below 0.7).

    Args:
        confidences: confidence of each prediction, in [0, 1] (list, NumPy array or torch tensor).
        correct: whether each prediction is correct (booleans or 0/1), same length.
        n_bins: number of bins ``M``.
        binning: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass); see
            :func:`reliability_diagram_data`.

    Returns:
        The ECE as a Python float in [0, 1].

    Raises:
        ValueError: on empty input, text (``"0.7"``), NaN, confidences outside [0, 1], correctness other
            than 0/1, mismatched lengths, ``n_bins < 1`` or an unknown ``binning``.

    Examples:
        >>> round(expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10), 3)
        0.4
    """
    return reliability_diagram_data(confidences, correct, n_bins=n_bins, binning=binning).ece


def average_confidence(confidences: Sequence[float] | Any) -> float:
    """Mean confidence over all predictions (compare with accuracy: above it means over-confident).

    Args:
        confidences: confidence of each prediction, in [0, 1] (list, NumPy array or torch tensor).

    Returns:
        The mean as a Python float in [0, 1].

    Raises:
        ValueError: on empty input, text (``"0.7"``), NaN or confidences outside [0, 1].

    Examples:
        >>> average_confidence([0.5, 1.0])
        0.75
    """
    return float(_check_confidences(confidences).mean())
