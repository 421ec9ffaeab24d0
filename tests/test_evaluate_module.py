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


def naive_uniform_ece(confidences, correct, n_bins=10):
    """Textbook loop in float64: bin m holds m/M <= c < (m+1)/M, the last bin also c == 1."""
    total = 0.0
    for m in range(n_bins):
        low, high = m / n_bins, (m + 1) / n_bins
        members = [i for i, c in enumerate(confidences) if low <= c < high or (m == n_bins - 1 and c == high)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            confidence = sum(confidences[i] for i in members) / len(members)
            total += len(members) / len(confidences) * abs(accuracy - confidence)
    return total


def test_empty_input_and_nothing_to_score_raise_a_clear_error(tmp_path):
    """`evaluate` itself fails here with an IndexError / AttributeError that names nothing."""
    metric = load(tmp_path)
    with pytest.raises(ValueError, match=r"`predictions` is empty; expected at least one prediction"):
        metric.compute(predictions=[], references=[])
    with pytest.raises(ValueError, match=r"`references` is empty; expected at least one"):
        metric.add_batch(predictions=[0.5], references=[])
    with pytest.raises(ValueError, match=r"nothing to score: no `predictions` were passed to `compute`"):
        load(tmp_path).compute()
    # the module is still usable after the refusals, and empty batches did not count
    metric.add_batch(predictions=[0.9, 0.6], references=[1, 0])
    assert metric.compute()["ece"] == pytest.approx(naive_uniform_ece([0.9, 0.6], [1, 0]))


@pytest.mark.parametrize(
    "given,name,value",
    [
        ({"predictions": ["0.9", "0.6"], "references": [1, 0]}, "`predictions`", "got '0.9' at index 0"),
        ({"predictions": [0.9, 0.6], "references": [1, "0"]}, "`references`", "got '0' at index 1"),
        (
            {"predictions": [[0.1, 0.9], [0.6, "0.4"]], "references": [1, 1]},
            "`predictions`",
            "got '0.4' at index 1",
        ),
    ],
)
def test_text_is_refused_not_read_as_the_number_it_spells(tmp_path, given, name, value):
    """`evaluate` casts "0.9" to the float 0.9 on its way in: the module refuses it first, as its own
    functions do, wherever it comes in (compute, add_batch, add)."""
    metric = load(tmp_path)
    expected = f"{name} must hold numbers, not text; {value}"
    with pytest.raises(ValueError, match=expected):
        metric.compute(**given)
    with pytest.raises(ValueError, match=expected):
        metric.add_batch(**given)
    with pytest.raises(ValueError, match=r"`prediction` must hold numbers, not text; got '0.9'"):
        metric.add(prediction="0.9", reference=1)
    # nothing was added by the refusals
    metric.add_batch(predictions=[0.9, 0.6], references=[1, 0])
    assert metric.compute()["ece"] == pytest.approx(naive_uniform_ece([0.9, 0.6], [1, 0]))


def test_a_gold_class_that_is_not_an_integer_is_refused_not_truncated(tmp_path):
    """A class index of 1.5 was cut to 1 by the int32 feature and scored as class 1."""
    metric = load(tmp_path)
    with pytest.raises(ValueError, match=r"gold class index .* must be an integer; got 1\.5 at index 0"):
        metric.compute(predictions=[[0.1, 0.9], [0.6, 0.4]], references=[1.5, 1])
    probs, golds = [[0.1, 0.9], [0.6, 0.4], [0.25, 0.75]], [1.0, 0.0, 0]  # whole floats are class indices
    naive_conf = [max(p) for p in probs]
    naive_correct = [int(p.index(max(p)) == g) for p, g in zip(probs, golds)]
    assert metric.compute(predictions=probs, references=golds)["ece"] == pytest.approx(
        naive_uniform_ece(naive_conf, naive_correct)
    )


@pytest.mark.parametrize(
    ("vectors", "index", "total"),
    [
        ([[0.1, 0.2], [0.3, 0.7]], 0, "0.3"),  # unnormalised scores in [0, 1]
        ([[0.5, 0.5], [0.9]], 1, "0.9"),  # a single probability instead of a distribution
        ([[0.5, 0.5], [0.8, 0.9, 0.1]], 1, "1.8"),  # independent sigmoids (multi-label)
    ],
)
def test_vectors_that_are_not_probability_distributions_are_refused(tmp_path, vectors, index, total):
    with pytest.raises(ValueError, match=rf"sum to 1 .* at index {index} sums to {total}.*softmax"):
        load(tmp_path).compute(predictions=vectors, references=[0] * len(vectors))


def test_float32_softmax_over_a_large_vocabulary_is_accepted(tmp_path):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(6, 50_000, generator=generator) * 3, dim=-1).numpy()  # float32
    golds = probs.argmax(1).tolist()
    golds[0] = (golds[0] + 1) % 50_000
    result = load(tmp_path).compute(predictions=probs, references=golds)
    confidences = [float(p.max()) for p in probs]
    correct = [int(int(p.argmax()) == g) for p, g in zip(probs, golds)]
    assert result["ece"] == pytest.approx(naive_uniform_ece(confidences, correct), abs=1e-12)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_bins": 0}, "`n_bins` must be a positive integer; got 0"),
        ({"n_bins": 10.0}, "`n_bins` must be a positive integer; got 10.0"),
        ({"binning": "equal_mass"}, "`binning` must be 'uniform' or 'quantile'; got 'equal_mass'"),
    ],
)
def test_invalid_load_time_options_fail_at_load_not_at_the_first_evaluation(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        load(tmp_path, **options)
