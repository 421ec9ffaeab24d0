"""The task spec: built-in tasks, the user's own, correctness, confidence defaults and baselines."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from hf_cotmi import ECECallback, TaskSpec, equation_accuracy, get_task, text_accuracy
from hf_cotmi.confidence import CONFIDENCE_MODES
from hf_cotmi.tasks import NLI_LABELS, TASKS, answer_key_function, correctness_function


def test_builtin_tasks_carry_their_policy():
    assert list(TASKS) == ["synthetic", "svamp", "cqa", "esnli", "anli1"]
    assert get_task("svamp").metric == "equation"
    assert {get_task(n).metric for n in ("synthetic", "cqa", "esnli", "anli1")} == {"text"}
    cqa = get_task("cqa")
    assert (cqa.candidates_column, cqa.label_candidates, cqa.confidence, cqa.baseline) == (
        "choices",
        None,
        "candidates",
        "chance",
    )
    for name in ("esnli", "anli1"):
        spec = get_task(name)
        assert spec.label_candidates == ("entailment", "neutral", "contradiction")
        assert (spec.confidence, spec.baseline) == ("candidates", "majority")
    for name in ("synthetic", "svamp"):
        assert (get_task(name).confidence, get_task(name).baseline, get_task(name).candidates) == (
            "sequence",
            "majority",
            None,
        )
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("cqa").metric = "equation"  # type: ignore[misc]


def test_nli_labels_are_defined_once():
    from hf_cotmi.data import dss

    assert dss.NLI_LABELS is NLI_LABELS
    assert dss.nli_label_text(2) == NLI_LABELS[2] == "contradiction"
    assert all(dss.DSS_DATASETS[name].task == TASKS[name].metric for name in dss.DSS_DATASETS)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown task 'svampp'; expected one of synthetic, svamp, cqa, esnli, anli1"
    ):
        get_task("svampp")


@pytest.mark.parametrize(
    ("metric", "prediction", "gold"),
    [
        ("equation", "(84 / 2)", "( 42.0 * 1.0 )"),
        ("equation", "3 + 4", "8"),
        ("equation", "not maths", "1"),
        ("text", "Neutral.", "neutral"),
        ("text", "bank", "river bank"),
    ],
)
def test_correctness_agrees_with_the_accuracy_metric(metric, prediction, gold):
    reference = equation_accuracy if metric == "equation" else text_accuracy
    expected = reference([prediction], [gold]) == 1.0
    assert correctness_function(metric)(prediction, gold) is expected
    spec = get_task("svamp" if metric == "equation" else "esnli")
    assert spec.is_correct(prediction, gold) is expected


def test_custom_spec_from_options_and_its_errors():
    assert TaskSpec.custom() == TaskSpec("custom", "text", None, None, "sequence", "majority")
    mine = TaskSpec.custom("mine", metric="equation", label_candidates=["yes", "no", "yes"])
    assert (mine.name, mine.metric, mine.label_candidates, mine.confidence) == (
        "mine",
        "equation",
        ("yes", "no"),
        "candidates",
    )
    assert TaskSpec.custom(candidates_column="options").baseline == "chance"
    assert TaskSpec.custom(label_candidates=["a", "b"], confidence="first_token").confidence == "first_token"
    with pytest.raises(ValueError, match=r"task 'custom': metric 'bleu' is not one of text, equation"):
        TaskSpec.custom(metric="bleu")
    with pytest.raises(
        ValueError, match=r"confidence 'entropy' is not one of " + ", ".join(CONFIDENCE_MODES)
    ):
        TaskSpec.custom(confidence="entropy")
    with pytest.raises(ValueError, match="candidates confidence needs label_candidates or candidates_column"):
        TaskSpec.custom(confidence="candidates")
    with pytest.raises(ValueError, match="a chance baseline needs"):
        TaskSpec.custom(baseline="chance")
    with pytest.raises(ValueError, match="not both"):
        TaskSpec.custom(label_candidates=["a"], candidates_column="options")
    with pytest.raises(ValueError, match="label_candidates is empty"):
        TaskSpec.custom(label_candidates=[])


def test_resolve_confidence_from_options_then_the_spec():
    esnli, cqa, synthetic = get_task("esnli"), get_task("cqa"), get_task("synthetic")
    assert esnli.resolve_confidence() == ("candidates", list(NLI_LABELS))
    assert esnli.resolve_confidence("sequence") == ("sequence", None)
    assert cqa.resolve_confidence(columns=["input", "choices"]) == ("candidates", "choices")
    assert cqa.resolve_confidence(columns=["input"]) == ("sequence", None)  # no choices column: generate
    assert synthetic.resolve_confidence() == ("sequence", None)
    assert synthetic.resolve_confidence("first_token") == ("first_token", None)
    assert synthetic.resolve_confidence(candidates=" yes, no ,") == ("candidates", ["yes", "no"])
    assert synthetic.resolve_confidence(candidates="options", columns=["options"]) == (
        "candidates",
        "options",
    )
    with pytest.raises(ValueError, match="names no label"):
        synthetic.resolve_confidence(candidates=" , ")
    with pytest.raises(ValueError, match="--confidence 'entropy' is not supported"):
        synthetic.resolve_confidence("entropy")
    with pytest.raises(ValueError, match="--confidence candidates needs --label-candidates"):
        synthetic.resolve_confidence("candidates")


def _naive_majority_accuracy(metric: str, train: list[str], test: list[str]) -> float:
    """The training label that the most training labels are right against, by pairwise comparison."""
    right = correctness_function(metric)
    majority = max(train, key=lambda label: sum(right(other, label) for other in train))
    return sum(right(majority, gold) for gold in test) / len(test)


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec.custom(label_candidates=["yes", "no"], confidence="sequence"),
        TaskSpec.custom(label_candidates=["yes", "no"], confidence="first_token"),
        TaskSpec.custom(candidates_column="options", confidence="sequence"),
        TaskSpec.custom(label_candidates=["yes", "no"]),
        TaskSpec.custom(candidates_column="options"),
        get_task("esnli"),
        get_task("cqa"),
        get_task("svamp"),
    ],
)
@pytest.mark.parametrize("mode", [None, "candidates", "sequence"])
def test_the_cli_and_the_api_resolve_the_same_confidence(spec, mode):
    """``resolve_confidence`` (CLI) and ``confidence_for`` (evaluate_calibration, ECECallback) agree.

    (A spec with candidates but a non-candidates default confidence was scored by candidates on the CLI.)
    """
    columns = ["input", "label", "options", "choices"]
    try:
        expected = spec.confidence_for(mode)
    except ValueError:
        expected = None
    if expected is None or (expected[0] == "candidates" and expected[1] is None):
        with pytest.raises(ValueError, match="needs --label-candidates"):
            spec.resolve_confidence(mode, columns=columns)
    else:
        assert spec.resolve_confidence(mode, columns=columns) == expected


def test_majority_baseline_against_a_naive_count():
    train = {"label": ["3", "5", "3", "7", "3.0"]}
    test = {"label": ["3", "3", "4", "5", "3.0", "3.00"]}
    majority = Counter(train["label"]).most_common(1)[0][0]
    text_expected = sum(gold == majority for gold in test["label"]) / len(test["label"])
    assert get_task("synthetic").baseline_accuracy(train, test) == pytest.approx(text_expected)  # 2/6
    # the equation metric compares values: "3", "3.0" and "3.00" are all right
    assert get_task("svamp").baseline_accuracy(train, test) == pytest.approx(4 / 6)
    assert get_task("synthetic").baseline_accuracy(None, test) != get_task("synthetic").baseline_accuracy(
        None, test
    )
    assert get_task("synthetic").baseline_accuracy(train, {"label": []}) != 0.0  # NaN, not a score


@pytest.mark.parametrize(
    ("task", "train", "test"),
    [
        # raw strings: "no" is the most frequent; as answers, yes (3) beats no (2)
        ("synthetic", ["Yes", "yes.", "YES", "no", "no"], ["yes", "no", "Yes", "maybe"]),
        # raw strings: "5" is; as values, 7 (3) beats 5 (2); an equation that does not evaluate never counts
        (
            "svamp",
            ["(3 + 4)", "5", "( 14.0 / 2.0 )", "5", "(10 - 3)", "4 +", "4 +", "4 +"],
            ["7", "5", "( 7.0 )"],
        ),
    ],
)
def test_majority_baseline_counts_the_answers_the_metric_counts_as_one(task, train, test):
    spec = get_task(task)
    expected = _naive_majority_accuracy(spec.metric, train, test)
    assert spec.baseline_accuracy({"label": train}, {"label": test}) == pytest.approx(expected)
    raw_majority = Counter(train).most_common(1)[0][0]
    assert expected != sum(spec.is_correct(raw_majority, gold) for gold in test) / len(test)


def test_empty_labels_are_never_right_nor_the_majority_answer():
    """An empty gold label cannot be matched, by either metric, and an empty training label is not an
    answer the majority baseline may pick (it would score on the empty test labels)."""
    for metric in ("text", "equation"):
        assert correctness_function(metric)("", "") is False
        assert answer_key_function(metric)(" . ") is None
    train, test = {"label": ["", "", "yes"]}, {"label": ["", "yes", "yes"]}
    assert get_task("synthetic").baseline_accuracy(train, test) == pytest.approx(2 / 3)


def test_majority_baseline_is_zero_when_no_training_label_can_be_scored():
    assert get_task("svamp").baseline_accuracy({"label": ["4 +", "x"]}, {"label": ["4"]}) == 0.0


def test_chance_baseline_over_each_examples_choices():
    choices = [["a", "b", "c", "d", "e"], ["a", "b"], ["x", "y", "z", "w", "v"]]
    expected = (1 / 5 + 1 / 2 + 1 / 5) / 3
    test = {"label": ["a", "b", "x"], "choices": choices}
    # the training labels play no part: free-text answers have no meaningful majority
    assert get_task("cqa").baseline_accuracy({"label": ["a", "a", "a"]}, test) == pytest.approx(expected)
    assert get_task("cqa").baseline_description == "chance over the choices"
    fixed = TaskSpec.custom(label_candidates=["yes", "no", "maybe", "later"], baseline="chance")
    assert fixed.baseline_accuracy(None, {"label": ["yes", "no"]}) == pytest.approx(0.25)


def test_ece_callback_reads_the_task_spec():
    callback = ECECallback(task="esnli")
    assert callback.mode == "candidates" and callback.label_candidates == list(NLI_LABELS)
    assert callback.is_correct("Neutral.", "neutral")
    cqa = ECECallback(task=get_task("cqa"))
    assert cqa.mode == "candidates" and cqa.label_candidates == "choices"
    svamp = ECECallback(task="svamp")
    assert svamp.mode == "sequence" and svamp.is_correct("(84 / 2)", "42")
    # explicit arguments win over the spec
    assert ECECallback(task="esnli", confidence="sequence", label_candidates=None).mode == "sequence"


def test_evaluate_calibration_reads_the_task_spec():
    from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer, evaluate_calibration

    tok = build_word_tokenizer(["a cat sleeps entailment neutral contradiction 3 4"])
    model = build_tiny_seq2seq(tok, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    raw = {"input": ["a cat sleeps", "a dog sleeps"], "label": ["neutral", "entailment"]}
    report = evaluate_calibration(model, tok, raw, task="esnli")
    assert report["confidence_mode"] == "candidates"  # the spec's three labels, scored
    explicit = evaluate_calibration(model, tok, raw, label_candidates=list(NLI_LABELS))
    assert report == explicit
    assert (
        evaluate_calibration(model, tok, raw, task="synthetic", max_new_tokens=2)["confidence_mode"]
        == "sequence"
    )


def test_chance_over_an_empty_choice_list_is_an_error_naming_the_example():
    with pytest.raises(ValueError, match=r"test example 1 has no 'choices'"):
        get_task("cqa").baseline_accuracy(None, {"choices": [["a", "b"], []]})


@pytest.mark.parametrize("mode", ["sequence", "first_token"])
def test_candidates_beside_a_generation_confidence_are_refused_not_dropped(mode):
    # evaluate_calibration(task=..., confidence="sequence", label_candidates=[...]) and replicate.py's
    # --confidence sequence --label-candidates went through here and lost the candidates without a word
    spec = get_task("esnli")
    with pytest.raises(ValueError, match=f"`confidence='{mode}'` scores the generated label"):
        spec.confidence_for(mode, ["entailment", "neutral"])
    with pytest.raises(ValueError, match=f"`confidence='{mode}'` scores the generated label"):
        spec.resolve_confidence(mode, "entailment,neutral", columns=["input", "label"])
    assert spec.confidence_for(None, ["yes", "no"]) == ("candidates", ["yes", "no"])
    assert spec.confidence_for(mode) == (mode, None)
