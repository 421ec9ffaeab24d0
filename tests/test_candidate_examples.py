"""Candidates confidence: the examples after training and ``predict`` also give the generated label.

In candidates mode the label shown (and ``predict``'s ``label``) is the most likely candidate, the one the
confidence is about, while training's ``test_accuracy`` counts the label the student generates. Both are
given, so the examples reconcile with both accuracies and ``predict`` agrees with plain greedy generation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import run
from conftest import TINY_STUDENT_WORDS, training_arguments

from hf_cotmi import build_tiny_causal_lm, build_word_tokenizer
from hf_cotmi.pipeline import (
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    run_prediction,
    run_training,
    shown_text,
)

LABELS = ("entailment", "neutral", "contradiction")
TEST_ROWS = 6


def _write_rows(path: Path, start: int, stop: int) -> str:
    rows = [
        {"input": f"the man is a dog {i}", "label": LABELS[i % 3], "rationale": "a man is a man"}
        for i in range(start, stop)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def candidates_run(tmp_path_factory) -> Path:
    """An untrained tiny Llama run with candidates confidence: its generated labels are not candidates."""
    folder = tmp_path_factory.mktemp("candidates-run")
    tokenizer = build_word_tokenizer([TINY_STUDENT_WORDS, "0 1 2 3 4 5 6 7 8 9 10 11"])
    model = build_tiny_causal_lm(tokenizer, "llama", hidden_size=16, num_layers=1, num_heads=2)
    student = folder / "student"
    model.save_pretrained(student)
    tokenizer.save_pretrained(student)
    out = folder / "out"
    run_training(
        ModelArguments(model_name_or_path=str(student)),
        DataArguments(
            train_file=_write_rows(folder / "train.jsonl", 0, 6),
            test_file=_write_rows(folder / "test.jsonl", 6, 6 + TEST_ROWS),
        ),
        EvaluationArguments(
            confidence="candidates", label_candidates=",".join(LABELS), num_examples_to_show=TEST_ROWS
        ),
        training_arguments(out, max_steps=1, learning_rate=1e-6),
        print_fn=lambda text: None,
    )
    return out


def _generated_labels(out: Path, texts: list[str]) -> list[str]:
    """The labels greedy generation gives (sequence confidence scores the generated label)."""
    return [row["label"] for row in run_prediction(str(out), texts, confidence="sequence", device="cpu")]


def test_examples_give_the_generated_label_that_test_accuracy_counts(candidates_run):
    results = json.loads((candidates_run / "results.json").read_text())
    examples, metrics = results["examples"], results["metrics"]
    assert len(examples) == TEST_ROWS
    generated = _generated_labels(candidates_run, [row["input"] for row in examples])
    assert [row["generated_label"] for row in examples] == generated
    assert any(row["generated_label"] != row["label"] for row in examples)  # the case this is about
    for row in examples:
        assert row["label"] in LABELS  # the most likely candidate
        assert row["generated_correct"] == (row["generated_label"] == row["gold"])
        assert row["correct"] == (row["label"] == row["gold"])
    # every test row is shown: their marks add up to the two reported accuracies
    assert metrics["test_accuracy"] == pytest.approx(
        sum(row["generated_correct"] for row in examples) / TEST_ROWS
    )
    assert metrics["test_choice_accuracy"] == pytest.approx(
        sum(row["correct"] for row in examples) / TEST_ROWS
    )


def test_predict_in_candidates_mode_also_gives_the_generated_label(candidates_run, capsys):
    texts = ["the man is a dog 1", "a woman is a man"]
    rows = run_prediction(str(candidates_run), texts, device="cpu")  # the run's mode: candidates
    assert [row["label"] in LABELS for row in rows] == [True, True]
    assert [row["generated_label"] for row in rows] == _generated_labels(candidates_run, texts)
    code, stdout, err = run(capsys, "predict", "--model", str(candidates_run), texts[0])
    assert code == 0, err
    lines = dict(line.split(":", 1) for line in stdout.strip().splitlines())
    # printed as shown_text prints it: an empty generated label as ""
    assert lines["generated"].strip() == shown_text(rows[0]["generated_label"])
    assert lines["label"].strip() == rows[0]["label"]


def test_predict_in_a_generation_mode_adds_nothing(candidates_run):
    (row,) = run_prediction(
        str(candidates_run), ["the man is a dog 1"], confidence="first_token", device="cpu"
    )
    assert set(row) == {"input", "label", "confidence", "rationale"}
