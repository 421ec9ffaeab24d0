"""The training-curve picture: its data from a log history (a pure function) and the PNG."""

from __future__ import annotations

import math

import pytest

from hf_cotmi import save_training_curve
from hf_cotmi.plotting import TRAINING_CURVE_KEYS, training_curve_data

HISTORY = [
    {"loss": 3.0, "loss_label": 2.0, "loss_rationale": 2.5, "loss_mi": 7.0, "grad_norm": 1.0, "step": 5},
    {"eval_loss": 2.9, "eval_accuracy": 0.1, "step": 5},
    {"loss": 2.0, "loss_label": 1.5, "loss_rationale": 1.0, "loss_mi": float("nan"), "step": 10},
    {"loss": 1.5, "loss_label": 1.0, "loss_rationale": 0.5, "loss_mi": 6.0, "step": 15},
    {"train_loss": 2.1, "train_runtime": 3.0, "step": 15},
]


def naive_curves(history):
    curves = {}
    for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
        points = [(e["step"], e[key]) for e in history if key in e and not math.isnan(e[key])]
        if points:
            curves[key] = ([s for s, _ in points], [v for _, v in points])
    return curves


def test_curve_data_keeps_training_losses_only():
    assert TRAINING_CURVE_KEYS == ("loss", "loss_label", "loss_rationale", "loss_mi")
    curves = training_curve_data(HISTORY)
    assert curves == naive_curves(HISTORY)
    assert curves["loss"] == ([5, 10, 15], [3.0, 2.0, 1.5])  # no eval_loss, no train_loss summary
    assert curves["loss_mi"] == ([5, 15], [7.0, 6.0])  # a NaN point is left out
    assert training_curve_data([{"loss": 1.0}, {"loss": True, "step": 2}]) == {}  # no step; a bool is no loss
    assert "loss_mi" not in training_curve_data([{"loss": 1.0, "step": 1}])


def test_training_curve_png(tmp_path):
    from matplotlib.image import imread

    path = save_training_curve(HISTORY, tmp_path / "deep" / "training_curve.png", title="a run")
    assert path == str(tmp_path / "deep" / "training_curve.png")
    image = imread(path)
    assert image.shape[0] == 400 and image.shape[1] == 600 and image.std() > 0.05  # drawn, not blank
    with pytest.raises(ValueError, match="holds no training loss"):
        save_training_curve([{"eval_loss": 1.0, "step": 1}], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
def test_every_filled_bin_of_the_reliability_diagram_is_drawn(binning):
    """Eight confidences of exactly 1.0 make a quantile bin [1, 1] of no width: its bar must still show."""
    from matplotlib.figure import Figure

    from hf_cotmi.calibration import reliability_diagram_data
    from hf_cotmi.plotting import _draw

    conf, correct = [1.0] * 8 + [0.6, 0.7], [1] * 7 + [0, 1, 0]
    bins = reliability_diagram_data(conf, correct, n_bins=5, binning=binning)
    upper, lower = Figure().subplots(2, 1)
    _draw(upper, lower, bins)
    shown = [(p.get_x(), p.get_width(), p.get_height()) for p in lower.patches if p.get_height() > 0]
    assert sum(height for _, _, height in shown) == len(conf)  # the count panel shows every prediction
    assert all(width > 0 and 0 <= x and x + width <= 1 + 1e-9 for x, width, _ in shown)


@pytest.mark.parametrize("n_bins", [10, 60, 100])
def test_each_reliability_bar_spans_exactly_its_own_uniform_bin(n_bins):
    """With many bins a bar wider than its bin would draw its accuracy and count over a neighbour's range."""
    from matplotlib.figure import Figure

    from hf_cotmi.calibration import reliability_diagram_data
    from hf_cotmi.plotting import _draw

    conf = [0.505, 0.505, 0.505, 0.86, 0.97, 0.97]  # bins next to them stay empty
    correct = [1, 1, 0, 1, 0, 1]
    bins = reliability_diagram_data(conf, correct, n_bins=n_bins)
    upper, lower = Figure().subplots(2, 1)
    _draw(upper, lower, bins)
    # naive: a prediction's bin is floor(c * M), its range [m / M, (m + 1) / M)
    expected = {}
    for c in conf:
        m = min(int(c * n_bins), n_bins - 1)
        expected[m] = expected.get(m, 0) + 1
    shown = sorted(
        (round(p.get_x(), 9), round(p.get_width(), 9), p.get_height())
        for p in lower.patches
        if p.get_height() > 0
    )
    assert shown == [(round(m / n_bins, 9), round(1 / n_bins, 9), k) for m, k in sorted(expected.items())]
