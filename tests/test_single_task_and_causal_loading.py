"""The package pieces the benchmarks use: the single-task target and its parser, a prediction parser in
compute_metrics, and loading a causal student folder with the one student loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_cotmi import build_compute_metrics, build_word_tokenizer, parse_single_task_label, single_task_target
from hf_cotmi.data.parsing import (
    ANSWER_MARKER,
    EXPLANATION_MARKER,
    SINGLE_TASK_ORDERS,
    parse_single_task_rationale,
)


@pytest.mark.parametrize("order", SINGLE_TASK_ORDERS)
@pytest.mark.parametrize("label", ["neutral", "( 84.0 / 2.0 )", "wooded area"])
def test_single_task_label_survives_a_tokenizer_round_trip(order: str, label: str) -> None:
    rationale = "a man may not be tall . so he is tall ."  # lower-case "so" in the rationale, not the marker
    target = single_task_target(label, rationale, order)
    assert parse_single_task_label(target, order) == label
    # uncased, word-level decoding: markers come back lower-cased and spaced
    tokenizer = build_word_tokenizer([target])
    decoded = tokenizer.decode(tokenizer(target)["input_ids"], skip_special_tokens=True)
    assert decoded != target
    assert parse_single_task_label(decoded, order) == label.lower()


def test_single_task_parser_takes_the_last_answer_and_handles_missing_markers() -> None:
    text = f"x {ANSWER_MARKER} neutral . y {ANSWER_MARKER} entailment."
    assert parse_single_task_label(text, "rationale_first") == "entailment"
    assert parse_single_task_label("only a rationale .", "rationale_first") == ""
    assert parse_single_task_label("entailment", "label_first") == "entailment"
    assert parse_single_task_label(
        f"contradiction {EXPLANATION_MARKER} a {EXPLANATION_MARKER} b", "label_first"
    ) == ("contradiction")
    with pytest.raises(ValueError, match="single-task order 'middle'"):
        single_task_target("a", "b", "middle")
    with pytest.raises(ValueError, match="expected one of"):
        parse_single_task_label("a", "middle")


@pytest.mark.parametrize("order_text", ["Also the answer is yes .", "a cat. also the answer is yes"])
def test_the_answer_marker_is_a_phrase_not_the_end_of_a_word(order_text: str) -> None:
    """The marker "so the answer is" is not inside "also the answer is": no label, all rationale."""
    assert parse_single_task_label(order_text, "rationale_first") == ""
    assert parse_single_task_rationale(order_text, "rationale_first") == order_text.strip()
    # the marker still follows punctuation or digits directly
    assert parse_single_task_label("42.So the answer is 7", "rationale_first") == "7"


def test_compute_metrics_parses_predictions_but_not_references() -> None:
    from transformers import EvalPrediction

    tokenizer = build_word_tokenizer(["a cat sleeps so the answer is yes no"])
    predictions = tokenizer(["a cat sleeps so the answer is yes", "so the answer is no"])["input_ids"]
    gold = tokenizer(["yes", "yes"])["input_ids"]
    width = max(map(len, predictions))
    padded = [row + [-100] * (width - len(row)) for row in predictions]
    gold = [row + [-100] * (width - len(row)) for row in gold]
    plain = build_compute_metrics(tokenizer)(EvalPrediction(predictions=padded, label_ids=gold))
    parsed = build_compute_metrics(tokenizer, prediction_parser=parse_single_task_label)(
        EvalPrediction(predictions=padded, label_ids=gold)
    )
    assert plain == {"accuracy": 0.0} and parsed == {"accuracy": 0.5}


def test_load_student_detects_a_causal_folder_and_keeps_seq2seq(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_cotmi import build_tiny_seq2seq
    from hf_cotmi.students import is_causal_folder, load_student

    tokenizer = build_word_tokenizer(["a b c"])
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=len(tokenizer))).save_pretrained(
        tmp_path / "causal"
    )
    build_tiny_seq2seq(tokenizer, "t5", d_model=8).save_pretrained(tmp_path / "seq2seq")
    for folder in ("causal", "seq2seq"):
        tokenizer.save_pretrained(tmp_path / folder)
    assert is_causal_folder(str(tmp_path / "causal")) and not is_causal_folder(str(tmp_path / "seq2seq"))
    assert type(load_student(str(tmp_path / "causal")).model).__name__ == "GPT2LMHeadModel"
    assert type(load_student(str(tmp_path / "seq2seq")).model).__name__ == "T5ForConditionalGeneration"
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    assert is_causal_folder(str(adapters))


def test_evaluate_split_reports_choice_ranking_beside_generated_accuracy(tiny_student_dir, tmp_path) -> None:
    from conftest import training_arguments

    from hf_cotmi.pipeline import DataArguments, EvaluationArguments, ModelArguments, run_training

    printed: list[str] = []
    labels = ",".join(str(n) for n in range(40))
    results = run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(
            dataset="synthetic", synthetic_train_size=8, synthetic_test_size=6, max_input_length=64
        ),
        EvaluationArguments(label_candidates=labels, num_examples_to_show=0),
        training_arguments(tmp_path / "out", max_steps=1, generation_max_length=4),
        print_fn=printed.append,
    )
    metrics = results["metrics"]
    confidences = results["trainer"].callback_handler.callbacks
    last = next(c for c in confidences if hasattr(c, "last_results")).last_results["test"]
    assert metrics["test_choice_accuracy"] == pytest.approx(float(last.correct.mean()))
    assert metrics["test_ece"] == pytest.approx(last.ece(10))  # measured against the chosen candidate
    assert any(line.startswith("test: choice-ranking accuracy") for line in printed), printed
    saved = json.loads((tmp_path / "out" / "test_results.json").read_text())
    assert saved["test_choice_accuracy"] == metrics["test_choice_accuracy"]
