"""Multiple choice (each example its own candidates, CQA's ``choices``): the examples after training.

The test line's ECE is the chosen candidate's confidence against that candidate's correctness, so each
example printed after training must show that candidate, with that confidence (the softmax over its own
choices), beside the label the student generates (what ``test_accuracy`` counts). The confidences are
checked against teacher-forced scoring of each choice written here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_student, training_arguments
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_cotmi.pipeline import DataArguments, EvaluationArguments, ModelArguments, run_training

CHOICES = (
    ("man", "dog", "woman"),
    ("dog", "people", "man", "woman"),
    ("woman", "man"),
    ("people", "dog", "who", "where", "man"),
    ("where", "who", "dog"),
)


def _write_rows(path: Path) -> str:
    rows = [
        {
            "input": f"where is the {choices[-1]} {i}",
            "label": choices[i % len(choices)],
            "rationale": "a man",
            "choices": list(choices),
        }
        for i, choices in enumerate(CHOICES)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _choice_probabilities(folder: Path, text: str, choices: tuple[str, ...]) -> dict[str, float]:
    """Softmax over the choices of the teacher-forced log-likelihood of each, from plain transformers."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    encoded = tokenizer("predict: " + text, return_tensors="pt")
    log_likelihoods = []
    for choice in choices:
        target = torch.tensor([tokenizer(text_target=choice)["input_ids"]])
        with torch.no_grad():
            logits = model(**encoded, labels=target).logits[0].double()
        log_likelihoods.append(
            sum(logits[t].log_softmax(-1)[target[0, t]].item() for t in range(target.shape[1]))
        )
    top = max(log_likelihoods)
    weights = [math.exp(value - top) for value in log_likelihoods]
    return {choice: weight / sum(weights) for choice, weight in zip(choices, weights)}


@pytest.fixture(scope="module")
def choices_run(tmp_path_factory) -> Path:
    """A tiny T5 trained one step on rows with a ``choices`` column, candidates confidence over it."""
    folder = tmp_path_factory.mktemp("choices-run")
    student = save_tiny_student(folder / "student")
    data = _write_rows(folder / "rows.jsonl")
    out = folder / "out"
    run_training(
        ModelArguments(model_name_or_path=student),
        DataArguments(train_file=data, test_file=data),
        EvaluationArguments(
            confidence="candidates", label_candidates="choices", num_examples_to_show=len(CHOICES)
        ),
        training_arguments(out, max_steps=1, learning_rate=1e-6),
        print_fn=lambda text: None,
    )
    return out


def test_examples_show_the_chosen_candidate_with_its_confidence(choices_run):
    results = json.loads((choices_run / "results.json").read_text())
    examples, metrics = results["examples"], results["metrics"]
    assert len(examples) == len(CHOICES)
    for row, choices in zip(examples, CHOICES):
        probabilities = _choice_probabilities(choices_run, row["input"], choices)
        best = max(probabilities, key=probabilities.get)
        assert row["label"] == best
        assert row["confidence"] == pytest.approx(probabilities[best], abs=1e-5)
        assert row["correct"] == (best == row["gold"])
        assert row["generated_correct"] == (row["generated_label"] == row["gold"])
    # every test row is shown: the marks add up to the two accuracies, the confidences to the average
    assert metrics["test_choice_accuracy"] == pytest.approx(
        sum(row["correct"] for row in examples) / len(CHOICES)
    )
    assert metrics["test_accuracy"] == pytest.approx(
        sum(row["generated_correct"] for row in examples) / len(CHOICES)
    )
    assert metrics["test_avg_confidence"] == pytest.approx(
        sum(row["confidence"] for row in examples) / len(CHOICES), abs=1e-5
    )


def test_predict_texts_refuses_shared_and_per_text_candidates_together_or_miscounted(tmp_path):
    from hf_cotmi.generation import predict_texts

    folder = save_tiny_student(tmp_path / "student")
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with pytest.raises(ValueError, match="label_candidates .* or candidates_per_text, not both"):
        predict_texts(model, tokenizer, ["a man"], label_candidates=["man"], candidates_per_text=[["man"]])
    with pytest.raises(ValueError, match="candidates_per_text has 1 lists for 2 texts"):
        predict_texts(model, tokenizer, ["a man", "a dog"], candidates_per_text=[["man", "dog"]])
