"""The recipes in hf_cotmi.pipeline, step by step, and what the task spec fixes in `hf-cotmi train` on CQA."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import DSS_DATA, needs_dss, training_arguments

from hf_cotmi.cli import main
from hf_cotmi.pipeline import (
    RELIABILITY_DIAGRAM,
    SIDECAR_NAME,
    CLIUsageError,
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    build_features,
    load_task_data,
    run_evaluation,
    run_training,
    task_spec,
)
from hf_cotmi.prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX
from hf_cotmi.students import ADAPTER_CONFIG, Student, load_student, peft_config

SYNTHETIC = DataArguments(dataset="synthetic", synthetic_train_size=12, synthetic_test_size=6)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_load_task_data_gives_splits_and_the_task_spec(tmp_path):
    data = load_task_data(SYNTHETIC)
    assert {k: v.num_rows for k, v in data.splits.items()} == {"train": 12, "test": 6}
    assert data.spec.name == "synthetic" and data.task == data.spec.metric == "text"
    assert data.name == "synthetic-arithmetic-cot" and data.source["dataset"] == "synthetic"

    rows = [{"input": f"q{i}", "label": "yes" if i % 2 else "no", "rationale": f"r{i}"} for i in range(4)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    own = load_task_data(DataArguments(train_file=str(train), task="equation"))
    assert own.name is None and own.spec.name == "custom" and own.spec.metric == "equation"
    assert own.source["train_file"] == str(train.resolve())

    assert task_spec(DataArguments(dataset="cqa")).baseline == "chance"
    assert task_spec(DataArguments(dataset="svamp", task="text")).metric == "text"  # --task overrides
    with pytest.raises(CLIUsageError, match=r"unknown dataset 'svampp'; expected one of synthetic, svamp"):
        load_task_data(DataArguments(dataset="svampp"))
    with pytest.raises(CLIUsageError, match="--dataset cqa needs --data-dir"):
        load_task_data(DataArguments(dataset="cqa"))
    with pytest.raises(CLIUsageError, match="no data given"):
        load_task_data(DataArguments())


def test_build_features_tokenises_both_prefixed_tasks():
    data = load_task_data(SYNTHETIC)
    student = load_student(texts=[t for row in data.splits["train"] for t in row.values()], tiny_d_model=16)
    features = build_features(data, student.tokenizer, DataArguments(max_input_length=32))
    assert set(features) == {"train", "test"}
    first, raw = features["train"][0], data.splits["train"][0]
    tokenizer = student.tokenizer
    assert (
        first["input_ids"]
        == tokenizer(PREDICT_PREFIX + raw["input"], truncation=True, max_length=32)["input_ids"]
    )
    assert (
        first["expl_input_ids"]
        == tokenizer(EXPLAIN_PREFIX + raw["input"], truncation=True, max_length=32)["input_ids"]
    )
    assert tokenizer.decode(first["labels"], skip_special_tokens=True) == raw["label"]
    assert tokenizer.decode(first["rationale_labels"], skip_special_tokens=True) == raw["rationale"]
    held_out = build_features(data, tokenizer, DataArguments(max_input_length=32), with_rationale={"train"})
    assert "rationale_labels" in held_out["train"].column_names
    assert "rationale_labels" not in held_out["test"].column_names
    assert held_out["test"]["input_ids"] == features["test"]["input_ids"]


def test_load_student_fresh_saved_and_lora(tiny_student_dir, tmp_path):
    import torch
    from peft import PeftModel, get_peft_model

    fresh = load_student(ModelArguments(tiny_d_model=16, tiny_num_layers=1), ["tom has 3 apples"])
    assert isinstance(fresh, Student) and fresh.model.config.d_model == 16
    assert "word-level tokenizer" in fresh.description

    saved = load_student(tiny_student_dir, for_inference=True, device="cpu")
    assert saved.model.training is False and tiny_student_dir in saved.description
    assert saved.model.config.d_model == 16

    # LoRA adapters saved by a training run: merged for inference, a PeftModel for training
    base = load_student(tiny_student_dir).model
    adapted = get_peft_model(base, peft_config(ModelArguments(lora_r=2, lora_target_modules=["q", "v"])))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)  # non-zero, so merging changes the weights
    folder = tmp_path / "adapters"
    adapted.save_pretrained(folder)
    saved.tokenizer.save_pretrained(folder)
    assert (folder / ADAPTER_CONFIG).is_file()
    merged = load_student(str(folder), for_inference=True, device="cpu")
    assert not isinstance(merged.model, PeftModel) and merged.model.training is False
    trainable = load_student(str(folder))
    assert isinstance(trainable.model, PeftModel)
    ids = saved.tokenizer(["tom has 3 apples"], return_tensors="pt")["input_ids"]
    start = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        expected = adapted.eval()(input_ids=ids, decoder_input_ids=start).logits
        got = merged.model(input_ids=ids, decoder_input_ids=start).logits
        plain = saved.model(input_ids=ids, decoder_input_ids=start).logits
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, plain, atol=1e-5)

    not_a_folder = tmp_path / "model.bin"
    not_a_folder.write_text("x")
    with pytest.raises(CLIUsageError, match="is a file; expected a model folder"):
        load_student(str(not_a_folder))
    with pytest.raises(CLIUsageError, match="could not load the tokenizer"):
        load_student(str(tmp_path / "missing"))


def test_run_training_then_evaluation_step_by_step(tiny_student_dir, tmp_path):
    out = tmp_path / "out"
    args = training_arguments(out, max_steps=2, per_device_train_batch_size=4)
    lines: list[str] = []
    results = run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        SYNTHETIC,
        EvaluationArguments(num_examples_to_show=2),
        args,
        print_fn=lines.append,
    )
    data = load_task_data(SYNTHETIC)
    majority = Counter(data.splits["train"]["label"]).most_common(1)[0][0]
    expected = (
        sum(gold.strip().lower() == majority.strip().lower() for gold in data.splits["test"]["label"]) / 6
    )
    assert results["baseline_kind"] == "majority"
    assert results["baseline"] == pytest.approx(expected) == pytest.approx(results["majority_baseline"])
    assert results["reliability_diagram"] == str(out / RELIABILITY_DIAGRAM)
    assert (out / RELIABILITY_DIAGRAM).read_bytes().startswith(PNG_MAGIC)
    assert len(results["examples"]) == 2 and SIDECAR_NAME in results["files"]
    assert sum("6 test examples" in line for line in lines) == 1
    saved = json.loads((out / "results.json").read_text())
    assert saved["baseline_kind"] == "majority" and math.isclose(saved["baseline"], expected)

    report = run_evaluation(str(out), DataArguments(), EvaluationArguments(n_bins=5), batch_size=4)
    assert report["num_examples"] == 6 and report["task"] == "text" and report["n_bins"] == 5
    assert report["reliability_diagram"] == str(out / "reliability_diagram_test.png")  # always drawn now
    assert Path(report["reliability_diagram"]).read_bytes().startswith(PNG_MAGIC)
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["ece"] <= 1.0


def test_post_init_errors_of_the_argument_dataclasses_are_usage_errors(tiny_student_dir, tmp_path, capsys):
    code = main(
        ["train", "--model", tiny_student_dir, "--dataset", "synthetic", "--mi-loss-weight", "-1",
         "--output-dir", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith("hf-cotmi train: error: ")
        and "mi_loss_weight must be a finite non-negative number" in err[0]
    )
    assert "Traceback" not in err[0] and "(see hf-cotmi train --help)" in err[0]


@needs_dss("cqa")
def test_train_on_cqa_prints_one_header_and_the_chance_baseline(tiny_student_dir, tmp_path, capsys):
    out = tmp_path / "cqa"
    code = main(
        ["train", "--model", tiny_student_dir, "--dataset", "cqa", "--data-dir", str(DSS_DATA),
         "--max-train-samples", "16", "--max-test-samples", "3", "--num-examples-to-show", "3",
         "--max-steps", "1", "--per-device-train-batch-size", "4", "--save-strategy", "no", "--use-cpu",
         "--disable-tqdm", "--report-to", "none", "--generation-max-length", "4",
         "--rationale-max-new-tokens", "4", "--max-input-length", "64", "--output-dir", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("3 test examples") == 1, printed
    # CQA is free-text multiple choice with five choices per question: chance is 20%
    assert "(chance over the choices: 20.0%)" in printed, printed
    assert "most frequent training label" not in printed
    results = json.loads((out / "results.json").read_text())
    assert results["baseline_kind"] == "chance" and results["baseline"] == pytest.approx(0.2)
    assert "candidates confidence" in printed  # the spec's default: score each question's choices


def test_a_lora_run_from_a_relative_base_folder_loads_from_any_working_folder(
    tiny_student_dir, tmp_path, monkeypatch
):
    """``--model base --use-peft``: the saved adapters name their base model by an absolute path, so the
    output folder loads (peft, ``hf-cotmi evaluate``) from any working folder, not only where training ran."""
    import shutil

    from peft import AutoPeftModelForSeq2SeqLM

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_student_dir, "base")
    args = training_arguments("out", max_steps=1, per_device_train_batch_size=4)
    model_args = ModelArguments(model_name_or_path="base", use_peft=True, lora_r=2)
    run_training(model_args, SYNTHETIC, EvaluationArguments(num_examples_to_show=0), args, print_fn=print)
    saved = json.loads((tmp_path / "out" / ADAPTER_CONFIG).read_text())
    assert saved["base_model_name_or_path"] == str(tmp_path / "base")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert type(AutoPeftModelForSeq2SeqLM.from_pretrained(tmp_path / "out")).__name__.startswith("Peft")
    report = run_evaluation(str(tmp_path / "out"), DataArguments(), EvaluationArguments(), batch_size=4)
    assert report["num_examples"] == 6


def test_adapters_whose_base_model_is_not_there_say_which_base_they_need(tiny_student_dir, tmp_path):
    from peft import get_peft_model

    folder = tmp_path / "adapters"
    base = load_student(tiny_student_dir)
    get_peft_model(base.model, peft_config(ModelArguments(lora_r=2))).save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, "base_model_name_or_path": "runs/base"}))
    with pytest.raises(CLIUsageError) as error:
        load_student(str(folder))
    message = str(error.value)
    assert "base model 'runs/base'" in message and "base_model_name_or_path" in message
    assert "adapter_config.json" in message and "relative" in message
