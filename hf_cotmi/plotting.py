"""Reliability diagrams as PNG files (matplotlib, an optional extra: ``pip install "hf-cotmi[plot]"``).

matplotlib is imported only when a diagram is drawn, and only its object-oriented API with the Agg canvas
is used: no ``pyplot``, no global backend switch, safe in headless training jobs and threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .calibration import Binning, CalibrationBins, reliability_diagram_data

__all__ = ["matplotlib_available", "save_reliability_diagram"]

_MISSING = 'matplotlib is needed to draw reliability diagrams; install it with `pip install "hf-cotmi[plot]"`'


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (so that diagrams can be drawn).

    Examples:
        >>> isinstance(matplotlib_available(), bool)
        True
    """
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _import_matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(_MISSING) from err
    return Figure, FigureCanvasAgg


def save_reliability_diagram(
    confidences: Sequence[float] | Any,
    correct: Sequence[bool] | Any,
    path: str | os.PathLike[str],
    *,
    n_bins: int = 10,
    binning: Binning = "uniform",
    title: str | None = None,
    dpi: int = 100,
) -> str:
    """Draw a reliability diagram (accuracy against confidence per bin, with counts) and save it as PNG.

    The upper panel shows each bin's accuracy as a bar spanning the bin, the gap to the bin's mean
    confidence shaded, and the diagonal of perfect calibration; the lower panel shows how many predictions
    fall in each bin. The ECE, average confidence and accuracy are printed in the legend.

    Args:
        confidences: confidence of each prediction, in [0, 1].
        correct: whether each prediction is correct (booleans or 0/1).
        path: where to write the PNG; parent directories are created.
        n_bins: number of bins.
        binning: ``"uniform"`` or ``"quantile"`` (see :func:`hf_cotmi.reliability_diagram_data`).
        title: figure title.
        dpi: resolution.

    Returns:
        The path written, as a string.

    Raises:
        ImportError: when matplotlib is not installed (names the ``hf-cotmi[plot]`` extra).
        ValueError: for invalid confidences or correctness (see :func:`hf_cotmi.expected_calibration_error`).

    Examples:
        >>> save_reliability_diagram([0.2, 0.9, 0.7], [0, 1, 0], "/tmp/reliability.png")  # doctest: +SKIP
        '/tmp/reliability.png'
    """
    bins = reliability_diagram_data(confidences, correct, n_bins=n_bins, binning=binning)
    Figure, FigureCanvasAgg = _import_matplotlib()
    path = os.fspath(path)
    figure = Figure(figsize=(5.0, 6.0), dpi=dpi)
    FigureCanvasAgg(figure)
    upper, lower = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    _draw(upper, lower, bins)
    if title:
        upper.set_title(title)
    figure.tight_layout()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _draw(upper: Any, lower: Any, bins: CalibrationBins) -> None:
    import numpy as np

    widths = bins.upper - bins.lower
    filled = bins.count > 0
    acc = np.where(filled, bins.accuracy, 0.0)
    conf = np.where(filled, bins.confidence, 0.0)
    upper.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    upper.bar(
        bins.lower, acc, width=widths, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5,
        label="accuracy",
    )  # fmt: skip
    upper.bar(
        bins.lower[filled], (conf - acc)[filled], bottom=acc[filled], width=widths[filled], align="edge",
        color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//", label="gap to confidence",
    )  # fmt: skip
    upper.set_xlim(0, 1)
    upper.set_ylim(0, 1)
    upper.set_ylabel("accuracy")
    upper.legend(
        loc="upper left",
        fontsize="small",
        title=(
            f"ECE {100 * bins.ece:.2f}%  conf {100 * bins.average_confidence:.1f}%  "
            f"acc {100 * bins.accuracy_overall:.1f}%"
        ),
        title_fontsize="small",
    )
    lower.bar(
        bins.lower, bins.count, width=widths, align="edge", color="grey", edgecolor="black", linewidth=0.5
    )
    lower.set_xlabel("confidence")
    lower.set_ylabel("count")
