"""The synthetic multi-step arithmetic task behind the demo."""

from __future__ import annotations

import random
import re

import pytest

from hf_cotmi import build_word_tokenizer, prepare_dss_features
from hf_cotmi.data.synthetic import (
    arithmetic_vocabulary,
    generate_arithmetic_problem,
    make_arithmetic_cot_dataset,
)

STEP = re.compile(r"(\d+) ([+-]) (\d+) = (\d+) \.")


def check_rationale(row: dict[str, str]) -> list[tuple[int, str, int, int]]:
    """Recompute every step of a rationale from the numbers in the question; return the steps."""
    steps = [(int(a), op, int(b), int(c)) for a, op, b, c in STEP.findall(row["rationale"])]
    numbers = [int(n) for n in re.findall(r"\d+", row["input"])]
    assert steps, row
    count = numbers[0]
    for (a, op, b, c), amount in zip(steps, numbers[1:]):
        assert a == count and b == amount, row
        assert c == (a + b if op == "+" else a - b) and c >= 0, row
        count = c
    assert len(steps) == len(numbers) - 1
    assert row["rationale"].endswith(f"so the answer is {count} .")
    assert row["label"] == str(count)
    return steps


def test_rationales_spell_out_correct_steps_that_end_in_the_label():
    data = make_arithmetic_cot_dataset(n_train=300, n_test=50, n_valid=20, seed=3)
    assert {split: data[split].num_rows for split in data} == {"train": 300, "valid": 20, "test": 50}
    intermediate_differs = 0
    for split in data:
        assert data[split].column_names == ["input", "label", "rationale"]
        for row in data[split]:
            steps = check_rationale(row)
            assert len(steps) == 2
            # the intermediate result is information the label alone does not give
            intermediate_differs += steps[0][3] != int(row["label"])
    assert intermediate_differs > 300


def test_same_seed_same_data_and_splits_do_not_overlap():
    first = make_arithmetic_cot_dataset(n_train=200, n_test=40, seed=1)
    again = make_arithmetic_cot_dataset(n_train=200, n_test=40, seed=1)
    other = make_arithmetic_cot_dataset(n_train=200, n_test=40, seed=2)
    assert first["train"]["input"] == again["train"]["input"]
    assert first["test"]["label"] == again["test"]["label"]
    assert first["train"]["input"] != other["train"]["input"]
    assert not set(first["train"]["input"]) & set(first["test"]["input"])
    assert len(set(first["train"]["input"])) == 200


def test_labels_are_spread_so_chance_is_low():
    data = make_arithmetic_cot_dataset(n_train=2000, n_test=10, seed=0)
    labels = data["train"]["label"]
    most_common = max(labels.count(label) for label in set(labels))
    assert len(set(labels)) >= 20
    assert most_common / len(labels) < 0.15


@pytest.mark.parametrize("steps,max_number", [(1, 5), (3, 9), (4, 12)])
def test_generator_respects_its_bounds(steps, max_number):
    rng = random.Random(0)
    for _ in range(200):
        problem = generate_arithmetic_problem(rng, min_steps=steps, max_steps=steps, max_number=max_number)
        assert len(problem.changes) == steps
        assert 1 <= problem.start <= max_number
        assert all(1 <= abs(change) <= max_number for change in problem.changes)
        assert problem.answer == int(problem.label) >= 0
        check_rationale({"input": problem.input, "label": problem.label, "rationale": problem.rationale})


def test_vocabulary_covers_every_generated_word():
    tokenizer = build_word_tokenizer(arithmetic_vocabulary(max_steps=3, max_number=9))
    data = make_arithmetic_cot_dataset(n_train=200, n_test=0, seed=5, min_steps=1, max_steps=3)
    assert list(data) == ["train"]
    features = prepare_dss_features(data, tokenizer)
    unk = tokenizer.unk_token_id
    for row in features["train"]:
        for column in ("input_ids", "labels", "expl_input_ids", "rationale_labels"):
            assert unk not in row[column], (column, row["input"])
    row = features["train"][0]
    assert tokenizer.decode(row["rationale_labels"], skip_special_tokens=True) == row["rationale"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n_train": -1}, "n_train"),
        ({"n_test": 1.5}, "n_test"),
        ({"min_steps": 0}, "min_steps"),
        ({"min_steps": 3, "max_steps": 2}, "min_steps"),
        ({"max_number": 0}, "max_number"),
        ({"n_train": 700, "max_number": 1, "min_steps": 1, "max_steps": 1}, "distinct problems"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_arithmetic_cot_dataset(**{"n_train": 4, "n_test": 2, **kwargs})
