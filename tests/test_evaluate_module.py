"""The ECE `evaluate` module shipped in the package: loaded offline from its path, alone and combined."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate")

from hf_cotmi import ece_metric_path, expected_calibration_error  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def load(tmp_path, **kwargs):
    return evaluate.load(ece_metric_path(), cache_dir=str(tmp_path), keep_in_memory=True, **kwargs)


def predictions(seed=0, n=200):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.2, 0.999, size=n)
    correct = (rng.uniform(size=n) < conf - 0.1).astype(int)
    return conf, correct


def test_path_points_inside_the_package():
    path = ece_metric_path()
    assert os.path.isfile(path)
    assert os.path.isfile(os.path.join(os.path.dirname(path), "README.md"))
    import hf_cotmi

    assert os.path.dirname(os.path.abspath(hf_cotmi.__file__)) in os.path.abspath(path)


def test_load_from_path_and_compute_confidences(tmp_path):
    metric = load(tmp_path)
    conf, correct = predictions()
    result = metric.compute(predictions=conf.tolist(), references=correct.tolist())
    assert set(result) == {"ece", "avg_confidence"}
    assert result["ece"] == pytest.approx(expected_calibration_error(conf, correct), abs=1e-9)
    assert result["avg_confidence"] == pytest.approx(conf.mean())
    quantile = metric.compute(
        predictions=conf.tolist(), references=correct.tolist(), n_bins=5, binning="quantile"
    )
    assert quantile["ece"] == pytest.approx(
        expected_calibration_error(conf, correct, n_bins=5, binning="quantile"), abs=1e-9
    )


def test_load_time_defaults_and_batches(tmp_path):
    conf, correct = predictions(1)
    metric = load(tmp_path, n_bins=3)
    for start in range(0, 200, 50):
        metric.add_batch(
            predictions=conf[start : start + 50].tolist(), references=correct[start : start + 50]
        )
    result = metric.compute()
    assert result["ece"] == pytest.approx(expected_calibration_error(conf, correct, n_bins=3), abs=1e-9)


def test_probability_vectors_match_torchmetrics(tmp_path):
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(150, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = rng.integers(0, 3, size=150)
    result = load(tmp_path).compute(predictions=probs.tolist(), references=target.tolist())
    expected = multiclass_calibration_error(
        torch.tensor(probs), torch.tensor(target), num_classes=3, n_bins=10, norm="l1"
    ).item()
    assert result["ece"] == pytest.approx(expected, abs=1e-6)


def test_invalid_confidence_raises(tmp_path):
    with pytest.raises(ValueError, match=r"`confidences` must lie in \[0, 1\]"):
        load(tmp_path).compute(predictions=[0.5, 1.5], references=[1, 0])


BRIER = textwrap.dedent(
    '''
    """A minimal top-label Brier score, written by the test to combine with ECE."""
    import datasets
    import evaluate


    class Brier(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description="brier",
                citation="",
                inputs_description="",
                features=datasets.Features(
                    {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
                ),
            )

        def _compute(self, predictions, references):
            n = len(predictions)
            return {"brier_score": sum((p - r) ** 2 for p, r in zip(predictions, references)) / n}
    '''
)


def test_evaluate_combine(tmp_path):
    brier_dir = tmp_path / "brier"
    brier_dir.mkdir()
    (brier_dir / "brier.py").write_text(BRIER)
    suite = evaluate.combine(
        [load(tmp_path, n_bins=4), evaluate.load(str(brier_dir / "brier.py"), cache_dir=str(tmp_path))]
    )
    conf, correct = predictions(3)
    result = suite.compute(predictions=conf.tolist(), references=correct.tolist())
    assert set(result) == {"ece", "avg_confidence", "brier_score"}
    assert result["ece"] == pytest.approx(expected_calibration_error(conf, correct, n_bins=4), abs=1e-9)
    assert result["brier_score"] == pytest.approx(np.mean((conf - correct) ** 2))


def test_a_reference_other_than_0_or_1_is_refused_not_cut_to_an_integer(tmp_path):
    metric = load(tmp_path)
    with pytest.raises(ValueError, match=r"`correct` must hold booleans or 0/1; got 0\.7"):
        metric.compute(predictions=[0.9, 0.6], references=[0.7, 1])
    assert metric.compute(predictions=[0.9, 0.6], references=[True, False])["ece"] == pytest.approx(
        expected_calibration_error([0.9, 0.6], [1, 0])
    )


@pytest.mark.parametrize("gold", [-1, 2, 7])
def test_a_gold_class_outside_the_probability_vector_is_refused_not_counted_wrong(tmp_path, gold):
    """SNLI marks examples without a gold label with -1: scoring them as wrong answers would bias the ECE."""
    metric = load(tmp_path)
    with pytest.raises(
        ValueError, match=rf"`references` must be the gold class index .* \[0, 2\) at index 1; got {gold}"
    ):
        metric.compute(predictions=[[0.1, 0.9], [0.6, 0.4]], references=[1, gold])
    with pytest.raises(ValueError, match=r"in \[0, 0\) at index 0; got 0 \(an empty probability vector\)"):
        metric.compute(predictions=[[], [0.6, 0.4]], references=[0, 0])
    # in range: the top-label confidence and its correctness, as computed by hand
    probs, golds = [[0.1, 0.9], [0.6, 0.4], [0.3, 0.7]], [1, 1, 1]
    naive_conf = [max(p) for p in probs]
    naive_correct = [int(p.index(max(p)) == g) for p, g in zip(probs, golds)]
    assert metric.compute(predictions=probs, references=golds)["ece"] == pytest.approx(
        expected_calibration_error(naive_conf, naive_correct)
    )
