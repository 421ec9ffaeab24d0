"""Pictures as PNG files: reliability diagrams and the training curve (matplotlib, a core dependency).

matplotlib is imported only when a picture is drawn, and only its object-oriented API with the Agg canvas
is used: no ``pyplot``, no global backend switch, safe in headless training jobs and threads. The data of
each picture comes from a pure function (:func:`hf_cotmi.reliability_diagram_data`,
:func:`training_curve_data`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .calibration import Binning, CalibrationBins, reliability_diagram_data

__all__ = ["TRAINING_CURVE_KEYS", "save_reliability_diagram", "training_curve_data", "save_training_curve"]

_MISSING = (
    "matplotlib is needed to draw pictures and is a dependency of hf-cotmi; "
    "reinstall hf-cotmi or run `pip install matplotlib`"
)

TRAINING_CURVE_KEYS: tuple[str, ...] = ("loss", "loss_label", "loss_rationale", "loss_mi")
"""The training log keys the curve shows: the total loss and its three components."""


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
        ImportError: when matplotlib is not installed.
        ValueError: for invalid confidences or correctness (see :func:`hf_cotmi.expected_calibration_error`).

    Examples:
        >>> save_reliability_diagram([0.2, 0.9, 0.7], [0, 1, 0], "/tmp/reliability.png")  # doctest: +SKIP
        '/tmp/reliability.png'
    """
    bins = reliability_diagram_data(confidences, correct, n_bins=n_bins, binning=binning)
    Figure, FigureCanvasAgg = _import_matplotlib()
    figure = Figure(figsize=(5.0, 6.0), dpi=dpi)
    FigureCanvasAgg(figure)
    upper, lower = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    _draw(upper, lower, bins)
    if title:
        upper.set_title(title)
    return _save(figure, path)


def _save(figure: Any, path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    figure.tight_layout()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def training_curve_data(
    log_history: Sequence[Mapping[str, Any]], keys: Sequence[str] = TRAINING_CURVE_KEYS
) -> dict[str, tuple[list[int], list[float]]]:
    """The steps and values of each loss in a trainer's ``state.log_history`` (training entries only).

    An entry counts when it has a ``step`` and the key with a finite number; evaluation entries
    (``eval_loss``, ...) and the final ``train_loss`` summary are other keys, so they are left out. Keys
    never logged are absent from the result.

    Examples:
        >>> history = [{"loss": 2.0, "loss_mi": 0.5, "step": 10}, {"eval_loss": 1.9, "step": 10},
        ...            {"loss": 1.5, "loss_mi": 0.25, "step": 20}, {"train_loss": 1.7, "step": 20}]
        >>> training_curve_data(history)
        {'loss': ([10, 20], [2.0, 1.5]), 'loss_mi': ([10, 20], [0.5, 0.25])}
    """
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for key in keys:
        steps: list[int] = []
        values: list[float] = []
        for entry in log_history:
            value = entry.get(key)
            if (
                "step" in entry
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                steps.append(int(entry["step"]))
                values.append(float(value))
        if steps:
            curves[key] = (steps, values)
    return curves


def save_training_curve(
    log_history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 100,
) -> str:
    """Plot the loss and its components (``loss_label``, ``loss_rationale``, ``loss_mi``) over steps as PNG.

    Args:
        log_history: ``trainer.state.log_history``.
        path: where to write the PNG; parent directories are created.
        title: figure title.
        dpi: resolution.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: the history holds no training loss (nothing was logged: lower ``logging_steps``).

    Examples:
        >>> history = [{"loss": 2.0, "step": 1}, {"loss": 1.0, "step": 2}]
        >>> save_training_curve(history, "/tmp/curve.png")  # doctest: +SKIP
        '/tmp/curve.png'
    """
    curves = training_curve_data(log_history)
    if "loss" not in curves:
        raise ValueError(
            "the log history holds no training loss to plot; log more often (logging_steps) than the run is long"
        )
    Figure, FigureCanvasAgg = _import_matplotlib()
    figure = Figure(figsize=(6.0, 4.0), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for key, (steps, values) in curves.items():
        axes.plot(steps, values, marker="o", markersize=3, linewidth=2 if key == "loss" else 1, label=key)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title)
    return _save(figure, path)


def _draw(upper: Any, lower: Any, bins: CalibrationBins) -> None:
    import numpy as np

    filled = bins.count > 0
    # a quantile bin of tied confidences (many at exactly 1.0) has no width: give that one a visible width,
    # and no other (with more than 50 uniform bins a wider bar would cover its neighbours' confidences)
    widths = bins.upper - bins.lower
    widths = np.where(filled & (widths <= 0), 0.02, widths)
    left = np.minimum(bins.lower, 1.0 - widths)
    acc = np.where(filled, bins.accuracy, 0.0)
    conf = np.where(filled, bins.confidence, 0.0)
    upper.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    upper.bar(
        left, acc, width=widths, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5,
        label="accuracy",
    )  # fmt: skip
    upper.bar(
        left[filled], (conf - acc)[filled], bottom=acc[filled], width=widths[filled], align="edge",
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
    lower.bar(left, bins.count, width=widths, align="edge", color="grey", edgecolor="black", linewidth=0.5)
    lower.set_xlabel("confidence")
    lower.set_ylabel("count")
