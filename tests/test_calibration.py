"""ECE, average confidence and reliability-diagram bins against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_cotmi import average_confidence, expected_calibration_error, reliability_diagram_data


def naive_ece(confidences, correct, edges):
    """Textbook loop: bin m holds edges[m] <= c < edges[m+1] (last bin closed at 1)."""
    n = len(confidences)
    total = 0.0
    for m in range(len(edges) - 1):
        lo, hi = edges[m], edges[m + 1]
        last = m == len(edges) - 2
        members = [i for i, c in enumerate(confidences) if lo <= c < hi or (last and c == hi)]
        if not members:
            continue
        acc = sum(correct[i] for i in members) / len(members)
        conf = sum(confidences[i] for i in members) / len(members)
        total += len(members) / n * abs(acc - conf)
    return total


def random_predictions(seed, n=500, overconfidence=0.15):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.0, 0.999, size=n)
    correct = rng.uniform(size=n) < np.clip(conf - overconfidence, 0, 1)
    return conf, correct


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_uniform_ece_matches_torchmetrics(seed, n_bins):
    from torchmetrics.functional.classification import binary_calibration_error

    conf, correct = random_predictions(seed)
    # binary calibration error with preds = confidence of the predicted class and target = correct is the
    # top-label ECE when all confidences are >= 0.5; torchmetrics' binary variant uses preds as given, which
    # is exactly "confidence vs correctness" here.
    expected = binary_calibration_error(
        torch.tensor(conf, dtype=torch.float64),
        torch.tensor(correct, dtype=torch.long),
        n_bins=n_bins,
        norm="l1",
    ).item()
    got = expected_calibration_error(conf, correct, n_bins=n_bins)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(naive_ece(conf.tolist(), correct.tolist(), np.linspace(0, 1, n_bins + 1)))


def test_torchmetrics_multiclass_agrees_on_top_label():
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = rng.integers(0, 4, size=300)
    expected = multiclass_calibration_error(
        torch.tensor(probs), torch.tensor(target), num_classes=4, n_bins=10, norm="l1"
    ).item()
    got = expected_calibration_error(probs.max(1), probs.argmax(1) == target, n_bins=10)
    assert got == pytest.approx(expected, abs=1e-6)


def test_hand_computed_example_and_extremes():
    # bins of width 0.5: {0.2 wrong} -> |0 - 0.2| * 1/2 ; {0.9 right} -> |1 - 0.9| * 1/2
    assert expected_calibration_error([0.2, 0.9], [False, True], n_bins=2) == pytest.approx(0.15)
    assert expected_calibration_error([1.0, 1.0], [0, 0]) == pytest.approx(1.0)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.0)


def test_confidence_one_joins_last_bin():
    # torchmetrics gives 1.0 its own bin; here it is part of [0.9, 1.0] as in Guo et al. (2017)
    conf, correct = [0.95, 1.0], [1, 0]
    assert expected_calibration_error(conf, correct) == pytest.approx(abs(0.5 - 0.975))
    assert expected_calibration_error(conf, correct) == pytest.approx(
        naive_ece(conf, correct, np.linspace(0, 1, 11))
    )


@pytest.mark.parametrize("n_bins", [2, 4, 10])
def test_quantile_binning_equal_mass_and_naive(n_bins):
    conf, correct = random_predictions(7, n=400, overconfidence=0.3)
    bins = reliability_diagram_data(conf, correct, n_bins=n_bins, binning="quantile")
    assert bins.count.sum() == 400
    assert bins.count.min() >= 400 // n_bins - 1 and bins.count.max() <= 400 // n_bins + 1
    edges = np.concatenate([bins.lower, bins.upper[-1:]])
    assert edges[0] == 0.0 and edges[-1] == 1.0
    # by rank: bin m holds the predictions ranked m*N/M .. (m+1)*N/M - 1, and its lower edge is its smallest
    ordered = np.sort(conf)
    for m in range(1, n_bins):
        assert edges[m] == ordered[m * 400 // n_bins]
    expected = naive_ece(conf.tolist(), correct.tolist(), edges.tolist())
    assert expected_calibration_error(conf, correct, n_bins=n_bins, binning="quantile") == pytest.approx(
        expected
    )


def test_quantile_and_uniform_differ_on_skewed_confidences():
    # confidences crowd near 1 while accuracy is flat at 0.75: bins under and over 0.75 have gaps of both
    # signs, so where the edges fall changes the ECE (the test can tell the two schemes apart)
    rng = np.random.default_rng(5)
    conf = 1 - 0.6 * rng.uniform(size=400) ** 3
    correct = rng.uniform(size=400) < 0.75
    uniform = expected_calibration_error(conf, correct, n_bins=10)
    quantile = expected_calibration_error(conf, correct, n_bins=10, binning="quantile")
    assert abs(uniform - quantile) > 1e-3


@pytest.mark.parametrize(
    "conf,correct,n_bins,counts",
    [
        ([0.5] * 6 + [0.9] * 4, [1] * 6 + [0] * 4, 2, [6, 4]),  # a tied group at the bottom keeps its bin
        ([0.5] * 4 + [1.0] * 6, [1] * 4 + [0] * 6, 2, [4, 6]),  # and at the top
        ([0.0] * 8 + [0.6, 0.7], [0] * 8 + [1, 1], 4, [0, 8, 0, 2]),  # exact zeros (exp of a long sum)
    ],
)
def test_quantile_ties_at_either_end_do_not_swallow_the_other_predictions(conf, correct, n_bins, counts):
    bins = reliability_diagram_data(conf, correct, n_bins=n_bins, binning="quantile")
    assert bins.count.tolist() == counts
    edges = np.concatenate([bins.lower, bins.upper[-1:]]).tolist()
    assert bins.ece == pytest.approx(naive_ece(conf, correct, edges))
    groups = {c: [k for c2, k in zip(conf, correct) if c2 == c] for c in set(conf)}  # each group its own bin
    assert bins.ece == pytest.approx(
        sum(len(ks) / len(conf) * abs(np.mean(ks) - c) for c, ks in groups.items())
    )


def test_uniform_edges_are_exact_tenths():
    # linspace gives 0.30000000000000004: 0.3 would fall in [0.2, 0.3); its bin is [0.3, 0.4)
    assert reliability_diagram_data([0.3, 0.6, 0.7], [1, 1, 1], n_bins=10).count.tolist() == [
        0,
        0,
        0,
        1,
        0,
        0,
        1,
        1,
        0,
        0,
    ]


def test_quantile_with_ties_keeps_ties_together():
    conf = [0.7] * 6 + [0.2, 0.3]
    correct = [1, 1, 1, 0, 0, 0, 0, 1]
    bins = reliability_diagram_data(conf, correct, n_bins=4, binning="quantile")
    assert bins.count.sum() == 8
    assert 6 in bins.count.tolist()
    edges = np.concatenate([bins.lower, bins.upper[-1:]]).tolist()
    assert bins.ece == pytest.approx(naive_ece(conf, correct, edges))


def test_reliability_diagram_data_fields():
    bins = reliability_diagram_data([0.1, 0.15, 0.8, 0.95, 0.99], [0, 1, 1, 1, 0], n_bins=4)
    assert bins.n_bins == 4
    np.testing.assert_allclose(bins.lower, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(bins.upper, [0.25, 0.5, 0.75, 1.0])
    assert bins.count.tolist() == [2, 0, 0, 3]
    assert bins.accuracy[0] == pytest.approx(0.5) and math.isnan(bins.accuracy[1])
    assert bins.confidence[3] == pytest.approx((0.8 + 0.95 + 0.99) / 3)
    assert bins.average_confidence == pytest.approx(np.mean([0.1, 0.15, 0.8, 0.95, 0.99]))
    assert bins.accuracy_overall == pytest.approx(0.6)
    assert bins.ece == pytest.approx(
        expected_calibration_error([0.1, 0.15, 0.8, 0.95, 0.99], [0, 1, 1, 1, 0], n_bins=4)
    )


def test_accepts_tensors_lists_and_arrays():
    conf = [0.3, 0.6, 0.9]
    correct = [True, False, True]
    ref = expected_calibration_error(conf, correct)
    assert expected_calibration_error(torch.tensor(conf), torch.tensor(correct)) == pytest.approx(
        ref, abs=1e-7
    )
    assert expected_calibration_error(np.array(conf), np.array(correct, dtype=int)) == pytest.approx(ref)
    assert isinstance(ref, float)


def test_average_confidence():
    assert average_confidence([0.5, 1.0]) == 0.75
    assert average_confidence(torch.tensor([0.25, 0.75])) == pytest.approx(0.5)
    assert isinstance(average_confidence([0.1]), float)


@pytest.mark.parametrize(
    ("confidences", "correct", "match"),
    [
        ([], [], "`confidences` is empty"),
        ([0.5, float("nan")], [1, 0], "NaN at index 1"),
        ([0.5, 1.2], [1, 0], r"\[0, 1\]; got 1.2 at index 1"),
        ([-0.1], [1], r"\[0, 1\]"),
        ([0.5, 0.6], [1], "`correct` has 1 values"),
        ([0.5], [2], "`correct` must hold booleans or 0/1"),
        ([[0.5, 0.5]], [[1, 0]], "must be 1-D"),
        (["a"], [1], "`confidences` must hold numbers, not text; got 'a' at index 0"),
        # a text that spells a number is refused as well, not read as the number
        (["0.7", "0.9"], [1, 0], "`confidences` must hold numbers, not text; got '0.7' at index 0"),
        ([0.7, "0.9"], [1, 0], "`confidences` must hold numbers, not text; got '0.9' at index 1"),
        (np.array(["0.7"]), [1], "`confidences` must hold numbers, not text; got '0.7' at index 0"),
        ([b"0.7"], [1], r"`confidences` must hold numbers, not text; got b'0.7' at index 0"),
        ([0.7, 0.9], ["1", "0"], "`correct` must hold numbers, not text; got '1' at index 0"),
    ],
)
def test_invalid_inputs_raise(confidences, correct, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(confidences, correct)


@pytest.mark.parametrize("bad", [[], [float("nan")], [1.5], [-0.01], ["0.5"]])
def test_average_confidence_invalid(bad):
    with pytest.raises(ValueError, match="confidences"):
        average_confidence(bad)


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="`n_bins` must be a positive integer"):
        expected_calibration_error([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match="`binning` must be 'uniform' or 'quantile'"):
        expected_calibration_error([0.5], [1], binning="equal")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_bins": 0}, "`n_bins` must be a positive integer; got 0"),
        ({"n_bins": 2.5}, "`n_bins` must be a positive integer; got 2.5"),
        ({"binning": "equal"}, "`binning` must be 'uniform' or 'quantile'; got 'equal'"),
    ],
)
def test_evaluate_calibration_refuses_bad_binning_before_scoring_the_model(
    monkeypatch, tmp_path, options, match
):
    """A typo in n_bins/binning must fail at once, not after loading the model and scoring the whole set."""
    import hf_cotmi.evaluation
    from hf_cotmi import evaluate_calibration

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was scored before the binning options were checked")

    monkeypatch.setattr(hf_cotmi.evaluation, "label_confidences", must_not_run)
    raw = {"input": ["a man sleeps"], "label": ["yes"]}
    with pytest.raises(ValueError, match=match):
        evaluate_calibration(object(), object(), raw, label_candidates=["yes", "no"], **options)
    # a saved model is not even loaded (the folder does not exist: loading it would fail otherwise)
    with pytest.raises(ValueError, match=match):
        evaluate_calibration(str(tmp_path / "no_such_student"), None, raw, **options)


def test_evaluate_calibration_names_an_empty_dataset():
    from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer, evaluate_calibration

    tok = build_word_tokenizer(["predict: a man sleeps", "yes", "no"])
    model = build_tiny_seq2seq(tok, "t5", seed=0)
    with pytest.raises(ValueError, match="`dataset` is empty"):
        evaluate_calibration(model, tok, {"input": [], "label": []}, label_candidates=["yes", "no"])
