"""Multiple choice (each example its own candidates, CQA's ``choices``): the examples after training.

The test line's ECE is the chosen candidate's confidence against that candidate's correctness, so each
example printed after training must show that candidate, with that confidence (the softmax over its own
choices), beside the label the student generates (what ``test_accuracy`` counts). The confidences are
checked against teacher-forced scoring of each choice written here.

``hf-cotmi predict`` on such a run scores each question's own choices too (a JSON Lines record's ``choices``,
else the ``Answer Choices:`` lines of its text) and refuses an input without any; an empty generated label or
rationale is printed as ``""``, not as blank space; the model card says which confidence the ECE used.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import one_error_line, run
from conftest import save_tiny_student, training_arguments
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

from hf_cotmi.data.dss import format_cqa_input
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


def _assert_the_most_likely_choice_is_shown(run, row: dict, choices) -> str:
    """``row``'s label is its most likely choice and its confidence that choice's probability; returns it."""
    probabilities = _choice_probabilities(run, row["input"], choices)
    best = max(probabilities, key=probabilities.get)
    assert row["label"] == best
    assert row["confidence"] == pytest.approx(probabilities[best], abs=1e-5)
    return best


def test_examples_show_the_chosen_candidate_with_its_confidence(choices_run):
    results = json.loads((choices_run / "results.json").read_text())
    examples, metrics = results["examples"], results["metrics"]
    assert len(examples) == len(CHOICES)
    for row, choices in zip(examples, CHOICES):
        best = _assert_the_most_likely_choice_is_shown(choices_run, row, choices)
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


# ------------------------------------------------------------------ predict: each question's own choices


def _predict_rows(capsys, run_dir: Path, *argv: str) -> list[dict]:
    code, stdout, err = run(capsys, "predict", "--model", str(run_dir), "--device", "cpu", "--jsonl", *argv)
    assert code == 0, err
    return [json.loads(line) for line in stdout.splitlines()]


def test_predict_scores_each_questions_own_choices_from_its_json_record(choices_run, tmp_path, capsys):
    """The run's confidence is candidates over its ``choices`` column: predict reads each record's list."""
    questions = tmp_path / "questions.jsonl"
    records = [
        {"input": f"where is the {choices[-1]} {i}", "choices": list(choices)}
        for i, choices in enumerate(CHOICES)
    ]
    questions.write_text("".join(json.dumps(record) + "\n" for record in records))
    rows = _predict_rows(capsys, choices_run, "--input-file", str(questions))
    assert len(rows) == len(CHOICES)
    for row, choices in zip(rows, CHOICES):
        _assert_the_most_likely_choice_is_shown(choices_run, row, choices)
        assert row["choices"] == list(choices)
        assert "generated_label" in row  # candidates mode: the generated label beside the chosen choice


def test_predict_reads_the_choices_a_questions_text_lists(choices_run, capsys):
    """A CQA input lists its choices after ``Answer Choices:``, as the loader formats it: they are scored."""
    text = format_cqa_input("where is the man", ["dog", "woman", "man"])
    (row,) = _predict_rows(capsys, choices_run, text)
    probabilities = _choice_probabilities(choices_run, text, ("dog", "woman", "man"))
    best = max(probabilities, key=probabilities.get)
    assert (row["label"], row["choices"]) == (best, ["dog", "woman", "man"])
    assert row["confidence"] == pytest.approx(probabilities[best], abs=1e-5)


def test_a_records_choices_win_over_the_ones_its_text_lists(choices_run, capsys, tmp_path):
    questions = tmp_path / "questions.jsonl"
    text = format_cqa_input("where is the man", ["dog", "woman", "man"])
    questions.write_text(json.dumps({"input": text, "choices": ["people", "who"]}) + "\n")
    (row,) = _predict_rows(capsys, choices_run, "--input-file", str(questions))
    assert row["choices"] == ["people", "who"] and row["label"] in ("people", "who")


def test_predict_refuses_an_input_without_choices_naming_its_line(choices_run, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        json.dumps({"input": "where is the man", "choices": ["man", "dog"]}) + "\n\nwhere is the dog\n"
    )
    code, stdout, err = run(capsys, "predict", "--model", str(choices_run), "--input-file", str(questions))
    line = one_error_line(err, "predict")
    assert code == 2 and stdout == ""
    assert f"{questions}, line 3" in line and "'choices'" in line and "Answer Choices:" in line
    assert "--confidence sequence" in line  # the way out when no choices are at hand
    code, _, err = run(capsys, "predict", "--model", str(choices_run), "where is the man")
    assert code == 2 and "text argument 1" in one_error_line(err, "predict")


@pytest.mark.parametrize("choices", ["man", [], ["man", ""], ["man", 3]])
def test_predict_refuses_a_choices_field_that_is_no_list_of_answers(choices_run, tmp_path, capsys, choices):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"input": "where is the man", "choices": choices}) + "\n")
    code, _, err = run(capsys, "predict", "--model", str(choices_run), "--input-file", str(questions))
    line = one_error_line(err, "predict")
    assert code == 2 and f"{questions}, line 1" in line and "'choices'" in line and repr(choices) in line


def test_predict_with_sequence_confidence_needs_no_choices(choices_run, capsys):
    (row,) = _predict_rows(capsys, choices_run, "--confidence", "sequence", "where is the man")
    assert set(row) == {"input", "label", "confidence", "rationale"}


# ------------------------------------------------------------------ empty labels are shown as ""


def _generates_nothing(folder: Path) -> str:
    """Make a saved student's greedy generation end at once (every token but EOS suppressed): "" labels."""
    config = GenerationConfig.from_pretrained(folder)
    vocabulary = AutoModelForSeq2SeqLM.from_pretrained(folder).config.vocab_size
    config.suppress_tokens = [token for token in range(vocabulary) if token != config.eos_token_id]
    config.save_pretrained(folder)
    return str(folder)


def test_predict_prints_an_empty_label_as_quotes(choices_run, tmp_path, capsys):
    folder = _generates_nothing(Path(shutil.copytree(choices_run, tmp_path / "run")))
    text = format_cqa_input("where is the man", ["dog", "man"])
    code, stdout, err = run(capsys, "predict", "--model", folder, "--device", "cpu", text)
    assert code == 0, err
    assert '\ngenerated:  ""\n' in stdout and '\nrationale:  ""' in stdout
    code, stdout, err = run(capsys, "predict", "--model", folder, "--confidence", "sequence", text)
    assert code == 0, err
    assert '\nlabel:      ""\n' in stdout


@pytest.mark.parametrize("confidence", ["candidates", "sequence"])
def test_examples_after_training_print_an_empty_label_as_quotes(tmp_path, confidence):
    student = _generates_nothing(Path(save_tiny_student(tmp_path / "student")))
    data = _write_rows(tmp_path / "rows.jsonl")
    printed: list[str] = []
    run_training(
        ModelArguments(model_name_or_path=student),
        DataArguments(train_file=data, test_file=data),
        EvaluationArguments(
            confidence=confidence,
            label_candidates="choices" if confidence == "candidates" else None,
            num_examples_to_show=2,
        ),
        training_arguments(tmp_path / "out", max_steps=1, learning_rate=1e-6),
        print_fn=printed.append,
    )
    shown = [line for line in printed if line.startswith(("  label:", "  generated:", "  rationale:"))]
    assert shown, printed
    assert all(line.split(":", 1)[1].strip() for line in shown)  # nothing printed as blank space
    empty = "  generated: " if confidence == "candidates" else "  label:     "
    assert sum(line.startswith(empty + '""  (') for line in shown) == 2
    assert sum(line == '  rationale: ""' for line in shown) == 2


# ------------------------------------------------------------------ the card says how the ECE was measured


def test_the_card_says_the_ece_is_the_chosen_choices_against_its_correctness(choices_run):
    card = (choices_run / "README.md").read_text()
    section = card.split("## Evaluation results")[1].split("\n## ")[0]
    sentence = next(line for line in section.splitlines() if "`*_ece`" in line)
    assert "each example's own `choices`" in sentence
    assert "whether that choice is correct (`*_choice_accuracy`)" in sentence
    assert "`*_accuracy` counts the label the student generates" in sentence
