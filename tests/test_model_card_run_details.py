"""What the model card says about the run it was written for: the usage snippet generates with the run's
limits and prompts with an input that fits the task (one of the run's own when it has one), the evaluation
section says when the test figures cover only the first N examples, and a student loaded from a local folder
is named by the folder's base name (never its absolute path)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from cli_runs import run
from conftest import DSS_DATA, save_tiny_student, training_arguments
from conftest import needs_dss as needs_dss_data
from transformers import AutoModelForSeq2SeqLM

from hf_cotmi import DSSMITrainer, build_tiny_causal_lm, build_tiny_seq2seq, build_word_tokenizer
from hf_cotmi.data.synthetic import make_arithmetic_cot_dataset
from hf_cotmi.model_card import (
    DSSModelCardData,
    HeldOutSubset,
    card_base_model,
    held_out_subset,
    render_model_card,
)

needs_esnli = needs_dss_data("esnli")


def snippet(card_text: str) -> str:
    return re.search(r"```python\n(.*?)```", card_text, re.S).group(1)


def snippet_question(card_text: str) -> str:
    """The value of ``question = ...`` in the usage snippet (a Python string literal)."""
    line = next(line for line in snippet(card_text).splitlines() if line.startswith("question = "))
    return ast.literal_eval(line[len("question = ") :])


def new_token_limits(card_text: str) -> list[int]:
    return [int(n) for n in re.findall(r"max_new_tokens=(\d+)", snippet(card_text))]


def evaluation_section(card_text: str) -> str:
    return card_text.split("## Evaluation results")[1].split("\n## ")[0]


# ------------------------------------------------------------------ generation limits


@pytest.mark.parametrize("student_type", ["seq2seq", "causal"])
def test_the_snippet_generates_as_many_new_tokens_as_the_runs_evaluation(
    tmp_path, tiny_tokenizer, student_type
):
    """generation_max_length 64: a decoder-only student's evaluation generates 64 new tokens; a seq2seq one's
    ``max_length=64`` counts the decoder's start token, so 63 new tokens (checked with generate below)."""
    import torch

    if student_type == "causal":
        model = build_tiny_causal_lm(tiny_tokenizer, "llama", hidden_size=16, num_layers=1, num_heads=2)
    else:
        model = build_tiny_seq2seq(tiny_tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    args = training_arguments(tmp_path / "out", generation_max_length=64, rationale_max_new_tokens=48)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    label_tokens, rationale_tokens = new_token_limits(render_model_card(trainer.model_card_data()))
    assert rationale_tokens == 48
    prompt = torch.tensor([tiny_tokenizer("tom has 3 apples")["input_ids"]])
    if student_type == "causal":  # the trainer reads generation_max_length as new tokens
        assert label_tokens == 64
        return
    # what the trainer's evaluation generates (max_length=64, forced to the limit) is as long as the snippet's
    evaluated = model.generate(prompt, max_length=64, min_length=64, do_sample=False)
    snippet_ids = model.generate(
        prompt, max_new_tokens=label_tokens, min_new_tokens=label_tokens, do_sample=False
    )
    assert evaluated.shape == snippet_ids.shape and label_tokens == 63


# ------------------------------------------------------------------ the example input


def test_the_snippet_prompts_with_an_input_of_the_runs_own_data_when_the_card_has_one():
    own = 'He said "where?"\nAnswer Choices:\n(a) home'
    card = DSSModelCardData("m", datasets=["cqa"], example_input=own)
    assert snippet_question(render_model_card(card)) == own


def test_an_nli_cards_built_in_example_joins_premise_and_hypothesis_as_training_did():
    """The features join premise and hypothesis with the student tokenizer's EOS (here ``<sep>``)."""
    for card in (
        DSSModelCardData("m", datasets=["esnli"], nli_separator="<sep>"),
        DSSModelCardData("m", task="anli1", nli_separator="<sep>"),
    ):
        question = snippet_question(render_model_card(card))
        premise, hypothesis = question.split("<sep>")
        assert premise.strip() and hypothesis.strip() and "apples" not in question


def test_a_cqa_cards_built_in_example_lists_answer_choices_as_the_loader_formats_them():
    question = snippet_question(render_model_card(DSSModelCardData("m", task="cqa")))
    lines = question.split("\n")
    assert lines[1] == "Answer Choices:" and [line[:4] for line in lines[2:]] == [
        "(a) ",
        "(b) ",
        "(c) ",
        "(d) ",
        "(e) ",
    ]


def test_an_arithmetic_or_unknown_task_keeps_the_arithmetic_example():
    for card in (DSSModelCardData("m", datasets=["svamp"]), DSSModelCardData("m")):
        assert "apples" in snippet_question(render_model_card(card))


# ------------------------------------------------------------------ the evaluated subset


def test_held_out_subset_is_only_a_cut_when_examples_were_left_out():
    assert held_out_subset("test", evaluated=8, limit=20, available=8) is None  # the whole split
    assert held_out_subset("test", evaluated=8, limit=8, available=8) is None
    assert held_out_subset("test", evaluated=8, limit=None, available=100) is None  # no limit asked for
    assert held_out_subset("test", evaluated=3, limit=3, available=8) == HeldOutSubset("test", 3, 8)
    # the split's size unknown: N == limit may have left examples out; say "first N", without "of M"
    assert held_out_subset("test", evaluated=3, limit=3, available=None) == HeldOutSubset("test", 3, None)


def test_the_evaluation_section_says_when_the_figures_cover_only_the_first_examples():
    metrics = {"test_accuracy": 0.5, "eval_loss": 1.0}
    subset = HeldOutSubset("test", evaluated=4, available=9824, option="--max-test-samples")
    text = evaluation_section(
        render_model_card(DSSModelCardData("m", metrics=metrics, held_out_subsets={"test": subset}))
    )
    assert "The `test_*` figures cover only the first 4 of the 9824 examples of the `test` split" in text
    assert "`--max-test-samples`" in text and "`eval_*` figures cover" not in text
    unknown = HeldOutSubset("valid", evaluated=9, available=None, option="--max-eval-samples")
    text = evaluation_section(
        render_model_card(DSSModelCardData("m", metrics=metrics, held_out_subsets={"eval": unknown}))
    )
    assert "The `eval_*` figures cover only the first 9 examples of the `valid` split" in text
    assert "figures cover" not in evaluation_section(
        render_model_card(DSSModelCardData("m", metrics=metrics))
    )


# ------------------------------------------------------------------ a local student


def test_a_student_loaded_from_a_local_folder_is_named_by_its_base_name(tmp_path, tiny_tokenizer):
    folder = tmp_path / "my-student"
    build_tiny_seq2seq(tiny_tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32).save_pretrained(
        folder
    )
    trainer = DSSMITrainer(
        model=AutoModelForSeq2SeqLM.from_pretrained(folder),
        args=training_arguments(tmp_path / "out"),
        processing_class=tiny_tokenizer,
    )
    card = trainer.model_card_data(model_name="distilled")
    assert card.base_model is None and card.local_base_model == "my-student"
    text = render_model_card(card)
    assert "distilled from a local model (`my-student`)" in text and str(tmp_path) not in text
    assert "base_model" not in text.split("---")[1]  # a folder is no Hub id for the metadata
    # nor is a path that is no folder here (moved since, or relative to another working folder)
    trainer.model.config._name_or_path = str(tmp_path / "moved" / "my-student")
    card = trainer.model_card_data(model_name="distilled")
    assert card.base_model is None and card.local_base_model == "my-student"
    assert str(tmp_path) not in render_model_card(card)
    # a Hub name stays the linked base model
    trainer.model.config._name_or_path = "google-t5/t5-small"
    card = trainer.model_card_data(model_name="distilled")
    assert card.base_model == "google-t5/t5-small" and card.local_base_model is None
    assert "from [`google-t5/t5-small`](https://huggingface.co/google-t5/t5-small)" in render_model_card(card)


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (f"hub/models--google-t5--t5-small/snapshots/{COMMIT}", ("google-t5/t5-small", None)),
        (f"hub/models--gpt2/snapshots/{COMMIT}", ("gpt2", None)),
        # not the cache's layout: a folder like any other, named by its base name
        ("hub/models--google-t5--t5-small/snapshots/main", (None, "main")),
        (f"hub/datasets--me--data/snapshots/{COMMIT}", (None, COMMIT)),
        (f"hub/models--a--b--c/snapshots/{COMMIT}", (None, COMMIT)),  # no valid repository id
        ("home/me/models/t5-small", (None, "t5-small")),
    ],
)
def test_the_card_names_a_folder_by_the_hub_repository_its_path_spells(tmp_path, relative, expected):
    folder = tmp_path / relative
    folder.mkdir(parents=True)
    assert card_base_model(str(folder)) == expected
    assert card_base_model(str(folder) + "/") == expected


def test_the_card_names_hub_ids_and_never_a_path(tmp_path):
    assert card_base_model("google-t5/t5-small") == ("google-t5/t5-small", None)
    assert card_base_model("t5-small") == ("t5-small", None)
    assert card_base_model("") == (None, None)
    # a path that is no folder here (moved, or relative to another working folder) is no Hub id either
    assert card_base_model(str(tmp_path / "gone" / "t5-small")) == (None, "t5-small")
    assert card_base_model("../models/t5-small") == (None, "t5-small")
    # the cache spells the id even when the snapshot is gone
    assert card_base_model(f"/nowhere/models--org--name/snapshots/{COMMIT}") == ("org/name", None)


def test_a_link_to_a_cache_folder_names_its_hub_repository(tmp_path):
    """A link to a snapshot folder of the Hugging Face cache gave (None, 'linked'): the link's own path is not
    in the cache's layout, the folder it points to is."""
    snapshot = tmp_path / "hub" / "models--google-t5--t5-small" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (tmp_path / "linked").symlink_to(snapshot, target_is_directory=True)
    assert card_base_model(str(tmp_path / "linked")) == ("google-t5/t5-small", None)
    (tmp_path / "plain").mkdir()  # a link to any other folder is named by the link, as a folder is
    (tmp_path / "also-plain").symlink_to(tmp_path / "plain", target_is_directory=True)
    assert card_base_model(str(tmp_path / "also-plain")) == (None, "also-plain")


def test_a_relative_path_that_could_be_a_hub_id_is_one_unless_it_is_a_folder_here(tmp_path, monkeypatch):
    """``models/t5-small`` is a valid repository id (as ``from_pretrained`` takes it when no such folder is
    here), so it stays the card's ``base_model``; as a folder here, or spelled ``./models/t5-small``, or a
    Windows path, it is a path, named by its base name only."""
    monkeypatch.chdir(tmp_path)
    assert card_base_model("models/t5-small") == ("models/t5-small", None)
    assert card_base_model("./models/t5-small") == (None, "t5-small")
    assert card_base_model("models\\t5-small") == (None, "t5-small")
    assert card_base_model("C:\\Users\\me\\t5-small") == (None, "t5-small")
    assert card_base_model("C:/Users/me/t5-small") == (None, "t5-small")
    (tmp_path / "models" / "t5-small").mkdir(parents=True)
    assert card_base_model("models/t5-small") == (None, "t5-small")


def _student_from(folder: Path, tmp_path: Path, tiny_tokenizer) -> DSSMITrainer:
    """A trainer of a tiny T5 saved to and loaded from ``folder``, writing to ``tmp_path / "out"``."""
    build_tiny_seq2seq(tiny_tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32).save_pretrained(
        folder
    )
    return DSSMITrainer(
        model=AutoModelForSeq2SeqLM.from_pretrained(folder),
        args=training_arguments(tmp_path / "out"),
        processing_class=tiny_tokenizer,
    )


def _written_card(trainer: DSSMITrainer, caplog) -> tuple[str, list]:
    """The card ``create_model_card`` writes, and the trainer's log records about its base model."""
    caplog.clear()
    with caplog.at_level("INFO", logger="hf_cotmi"):
        trainer.create_model_card(model_name="distilled")
    records = [r for r in caplog.records if "base_model" in r.getMessage()]
    return Path(trainer.args.output_dir, "README.md").read_text(), records


def test_a_student_from_a_cache_folder_names_its_hub_repository(tmp_path, tiny_tokenizer, caplog):
    folder = tmp_path / "hub" / "models--google-t5--t5-small" / "snapshots" / COMMIT
    text, records = _written_card(_student_from(folder, tmp_path, tiny_tokenizer), caplog)
    assert "base_model: google-t5/t5-small\n" in text.split("---")[1]
    assert "distilled from [`google-t5/t5-small`](https://huggingface.co/google-t5/t5-small)" in text
    assert str(tmp_path) not in text and COMMIT not in text
    (record,) = records
    assert record.levelname == "INFO" and str(folder) in record.getMessage()
    assert "a snapshot of that Hub repository in the Hugging Face cache" in record.getMessage()


def test_a_card_for_the_hub_warns_that_a_local_base_model_is_left_out(tmp_path, tiny_tokenizer, caplog):
    folder = tmp_path / "my-student"
    trainer = _student_from(folder, tmp_path, tiny_tokenizer)
    text, records = _written_card(trainer, caplog)
    assert "base_model" not in text.split("---")[1] and str(tmp_path) not in text
    (record,) = records
    assert record.levelname == "INFO"  # a card for the folder: said, not warned of
    message = record.getMessage()
    assert f"loaded from the folder {folder}, which names no Hugging Face Hub repository" in message
    assert "finetuned_from='org/name' to push_to_hub() or create_model_card()" in message
    assert "--model org/name to hf-cotmi train" in message
    trainer.hub_model_id = "me/distilled"  # what push_to_hub sets (init_hf_repo) before it writes the card
    assert [(r.levelname, r.getMessage()) for r in _written_card(trainer, caplog)[1]] == [
        ("WARNING", message)
    ]
    # given, the base model is named, and nothing is said
    caplog.clear()
    with caplog.at_level("INFO", logger="hf_cotmi"):
        trainer.create_model_card(model_name="distilled", finetuned_from="google-t5/t5-small")
    assert "base_model: google-t5/t5-small\n" in Path(trainer.args.output_dir, "README.md").read_text()
    assert not [r for r in caplog.records if "base_model" in r.getMessage()]


# ------------------------------------------------------------------ hf-cotmi train writes all of it

FAST = [
    "--max-steps", "1", "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "8",
    "--save-strategy", "no", "--use-cpu", "--disable-tqdm", "true", "--report-to", "none",
    "--num-examples-to-show", "1",
]  # fmt: skip


def test_train_writes_a_card_with_the_runs_limits_input_subset_and_local_student(tmp_path, capsys):
    student = save_tiny_student(tmp_path / "my-student")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "train", "--model", student, "--dataset", "synthetic", "--synthetic-train-size", "16",
        "--synthetic-test-size", "8", "--max-test-samples", "3", "--generation-max-length", "6",
        "--rationale-max-new-tokens", "8", *FAST, "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    text = (out / "README.md").read_text()
    assert new_token_limits(text) == [5, 8]  # a seq2seq student: max_length 6 is 5 new tokens
    first_test_input = make_arithmetic_cot_dataset(16, 8, seed=0)["test"]["input"][0]
    assert snippet_question(text) == first_test_input
    assert "The `test_*` figures cover only the first 3 of the 8 examples of the `test` split" in text
    assert "a local model (`my-student`)" in text and str(tmp_path) not in text


@needs_esnli
def test_train_on_esnli_shows_a_test_pair_joined_with_the_students_eos(tmp_path, capsys):
    from hf_cotmi import load_dss_dataset

    rows = load_dss_dataset("esnli", DSS_DATA, splits=["test"])["test"]
    tokenizer = build_word_tokenizer(rows["premise"][:50] + ["entailment neutral contradiction"])
    tokenizer.eos_token = "<sep>"
    student = tmp_path / "nli-student"
    build_tiny_causal_lm(tokenizer, "llama", hidden_size=16, num_layers=1, num_heads=2).save_pretrained(
        student
    )
    tokenizer.save_pretrained(student)
    out = tmp_path / "esnli"
    code, _, err = run(
        capsys, "train", "--model", str(student), "--dataset", "esnli", "--data-dir", str(DSS_DATA),
        "--train-split", "valid", "--max-train-samples", "8", "--max-test-samples", "2",
        "--rationale-max-new-tokens", "4", *FAST, "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    text = (out / "README.md").read_text()
    first = json.loads(Path(DSS_DATA, "esnli", "esnli_test.json").read_text().splitlines()[0])
    assert snippet_question(text) == f"{first['premise']}<sep>{first['hypothesis']}"
    assert new_token_limits(text) == [64, 4]  # the default generation_max_length: --max-label-length 64
    records = sum(
        1 for line in Path(DSS_DATA, "esnli", "esnli_test.json").read_text().splitlines() if line.strip()
    )
    assert f"cover only the first 2 of the {records} examples of the `test` split" in text
    assert "a local model (`nli-student`)" in text and str(tmp_path) not in text


def test_a_row_of_your_own_files_never_reaches_the_card_a_built_in_datasets_does():
    """push_to_hub publishes the card: an input of your own files stays out; a built-in dataset's is public."""
    from datasets import Dataset

    from hf_cotmi.model_card import record_run_data
    from hf_cotmi.pipeline import LoadedData
    from hf_cotmi.run_arguments import DataArguments

    tokenizer = build_word_tokenizer(["a private question", "a public question"])
    rows = {"test": Dataset.from_dict({"input": ["a private question"], "label": ["x"], "rationale": ["r"]})}
    own = LoadedData(splits=rows, name=None, task="text", source={"train_file": "mine.jsonl"})
    card = DSSModelCardData("m")
    record_run_data(card, own, DataArguments(), tokenizer)
    assert card.example_input is None
    assert "private" not in snippet_question(render_model_card(card))

    rows = {"test": Dataset.from_dict({"input": ["a public question"], "label": ["x"], "rationale": ["r"]})}
    built_in = LoadedData(splits=rows, name="svamp", task="equation", source={"dataset": "svamp"})
    record_run_data(card, built_in, DataArguments(), tokenizer)
    assert snippet_question(render_model_card(card)) == "a public question"


# ------------------------------------------------------------------ how the ECE was measured

ECE_METRICS = {"test_accuracy": 0.5, "test_ece": 0.1, "test_avg_confidence": 0.6}


def ece_sentence(card: DSSModelCardData) -> str:
    lines = [line for line in evaluation_section(render_model_card(card)).splitlines() if "`*_ece`" in line]
    assert len(lines) == 1, lines
    return lines[0]


GENERATED = "whether that generated label is correct, the correctness `*_accuracy` counts"
CHOSEN = "`*_accuracy` counts the label the student generates"


@pytest.mark.parametrize(
    ("mode", "candidates", "phrases"),
    [
        ("sequence", None, ["sequence confidence", "probability of the whole label it generates", GENERATED]),
        ("first_token", None, ["first-token confidence", "first token of the label it generates", GENERATED]),
        ("candidates", ["entailment", "neutral", "contradiction"],
         ["candidates confidence", "the fixed labels `entailment`, `neutral`, `contradiction`",
          "whether that label is correct (`*_choice_accuracy`)", CHOSEN]),
        ("candidates", "choices",
         ["candidates confidence", "each example's own `choices`",
          "whether that choice is correct (`*_choice_accuracy`)", CHOSEN]),
    ],
)  # fmt: skip
def test_the_evaluation_section_says_which_confidence_the_ece_used(mode, candidates, phrases):
    card = DSSModelCardData("m", metrics=ECE_METRICS, confidence_mode=mode, label_candidates=candidates)
    sentence = ece_sentence(card)
    for phrase in phrases:
        assert phrase in sentence, (phrase, sentence)


def test_no_ece_sentence_without_an_ece_or_a_known_mode():
    no_ece = DSSModelCardData("m", metrics={"test_accuracy": 0.5}, confidence_mode="sequence")
    unknown = DSSModelCardData("m", metrics=ECE_METRICS)
    for card in (no_ece, unknown):
        assert "`*_ece`" not in evaluation_section(render_model_card(card))


def test_a_trainers_card_records_its_ece_callbacks_confidence(tmp_path, tiny_tokenizer):
    from hf_cotmi import ECECallback

    model = build_tiny_seq2seq(tiny_tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    callback = ECECallback(label_candidates="choices")
    trainer = DSSMITrainer(
        model=model,
        args=training_arguments(tmp_path / "out"),
        processing_class=tiny_tokenizer,
        callbacks=[callback],
    )
    card = trainer.model_card_data()
    assert (card.confidence_mode, card.label_candidates) == ("candidates", "choices")
    plain = DSSMITrainer(
        model=model, args=training_arguments(tmp_path / "plain"), processing_class=tiny_tokenizer
    )
    assert plain.model_card_data().confidence_mode is None
