"""`hf-cotmi demo` in a reduced fast mode: it trains, reports, shows examples and writes every file.

The full demo (600 steps, about two minutes) is not run here; its figures are in the README.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
import transformers
from conftest import DSS_DATA, needs_dss, save_tiny_student
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_cotmi.cli import main
from hf_cotmi.demo import demo_defaults, run_demo
from hf_cotmi.pipeline import SIDECAR_NAME, predict_texts

FAST = [
    "--max-steps", "6", "--logging-steps", "3", "--synthetic-train-size", "96", "--synthetic-test-size", "12",
    "--num-examples-to-show", "2", "--use-cpu",
]  # fmt: skip


def test_demo_trains_reports_and_saves_everything(tmp_path, capsys):
    out = tmp_path / "demo-out"
    before = (
        transformers.logging.get_verbosity(),
        logging.getLogger("hf_cotmi").level,
        torch.get_num_threads(),
    )
    code = main(["demo", "--output-dir", str(out), *FAST])
    printed = capsys.readouterr().out
    assert code == 0
    # the demo quiets libraries and uses one thread only while it runs
    after = (
        transformers.logging.get_verbosity(),
        logging.getLogger("hf_cotmi").level,
        torch.get_num_threads(),
    )
    assert after == before

    # progress, evaluation and examples are shown
    assert re.search(r"step 3/6 +loss [0-9.]+ +label [0-9.]+ +rationale [0-9.]+ +mi [0-9.]+", printed)
    assert "step 6/6" in printed
    match = re.search(
        r"test: accuracy ([0-9.]+)% \(.*: ([0-9.]+)%\), ECE ([0-9.]+), average confidence", printed
    )
    assert match, printed
    assert printed.count("  rationale: ") == 2 and printed.count("  label:     ") == 2
    assert "demo finished in" in printed

    # model, tokenizer, model card, reliability diagram and results are saved
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "reliability_diagram.png").read_bytes().startswith(b"\x89PNG")
    results = json.loads((out / "results.json").read_text())
    metrics = results["metrics"]
    assert metrics["test_accuracy"] == pytest.approx(float(match.group(1)) / 100, abs=1e-3)
    assert metrics["test_ece"] == pytest.approx(float(match.group(3)), abs=1e-3)
    assert 0.0 <= metrics["test_avg_confidence"] <= 1.0
    assert results["majority_baseline"] == pytest.approx(float(match.group(2)) / 100, abs=1e-3)
    assert len(results["examples"]) == 2

    card = ModelCard.load(out / "README.md")
    assert card.data.datasets == ["synthetic-arithmetic-cot"]
    assert "distilling-step-by-step" in card.data.tags
    values = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert values["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert values["test_ece"] == pytest.approx(metrics["test_ece"], abs=1e-6)
    assert "mi_loss_weight" in card.text and "@inproceedings{chen2024learning" in card.text

    # the saved student reloads and answers with a label and a rationale
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    sidecar = json.loads((out / SIDECAR_NAME).read_text())
    rows = predict_texts(
        model,
        tokenizer,
        ["tom has 3 apples . tom buys 4 more . then tom loses 2 . how many apples does tom have now ?"],
        label_max_new_tokens=sidecar["generation_max_length"],
        rationale_max_new_tokens=sidecar["rationale_max_new_tokens"],
    )
    assert set(rows[0]) == {"input", "label", "confidence", "rationale"}
    assert 0.0 <= rows[0]["confidence"] <= 1.0


def test_run_demo_from_python_and_its_defaults(tmp_path):
    lines: list[str] = []
    results = run_demo(
        str(tmp_path / "py-demo"),
        max_steps=2,
        logging_steps=1,
        synthetic_train_size=32,
        synthetic_test_size=4,
        num_examples_to_show=1,
        use_cpu=True,
        print_fn=lines.append,
    )
    assert results["trainer"].state.global_step == 2
    assert {"README.md", "model.safetensors", "reliability_diagram.png"} <= set(results["files"])
    assert any(line.startswith("  step 2/2") for line in lines)
    with pytest.raises(TypeError, match="no_such_option"):
        run_demo(str(tmp_path / "x"), no_such_option=1)


def test_demo_defaults_switch_for_real_models_and_data():
    tiny = demo_defaults()
    assert tiny["dataset"] == "synthetic" and tiny["output_dir"] == "demo-out"
    real_model = demo_defaults(real_model=True)
    assert real_model["learning_rate"] < tiny["learning_rate"]
    assert real_model["max_label_length"] > tiny["max_label_length"]
    real_data = demo_defaults(real_data=True)
    assert "dataset" not in real_data and real_data["max_input_length"] == 512


def test_demo_reports_bad_options_in_one_line(tmp_path, capsys):
    code = main(["demo", "--output-dir", str(tmp_path), "--dataset", "svamp"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "needs --data-dir" in err


@needs_dss("svamp")
def test_demo_switches_to_real_data(tmp_path, capsys):
    out = tmp_path / "svamp-demo"
    code = main(
        ["demo", "--output-dir", str(out), "--dataset", "svamp", "--data-dir", str(DSS_DATA),
         "--max-steps", "2", "--max-train-samples", "32", "--max-test-samples", "8", "--use-cpu"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "data: svamp (train 32, eval 80, test 8 examples; answers compared as equation)" in printed
    assert "word-level tokenizer" in printed  # no --model: the small T5, its vocabulary from the SVAMP texts
    sidecar = json.loads((out / SIDECAR_NAME).read_text())
    assert sidecar["task"] == "equation" and sidecar["max_input_length"] == 512
    assert ModelCard.load(out / "README.md").data.datasets == ["svamp"]


def test_demo_switches_to_a_given_student(tmp_path, capsys):
    student = save_tiny_student(tmp_path / "student")
    results = run_demo(
        str(tmp_path / "out"),
        model_name_or_path=student,
        max_steps=2,
        synthetic_train_size=32,
        synthetic_test_size=4,
        use_cpu=True,
        print_fn=lambda line: None,
    )
    trainer = results["trainer"]
    assert trainer.args.learning_rate == pytest.approx(5e-4)  # the pretrained-student default
    assert trainer.model.config.d_model == 16  # the given student, not the built-in one


@pytest.mark.slow
def test_demo_smoke_saves_everything_in_seconds(tmp_path, capsys):
    from hf_cotmi.cli import demo_arguments

    parsed = demo_arguments(["--smoke"])
    assert parsed[4].smoke is True and parsed[3].max_steps == 20 and parsed[1].synthetic_train_size == 256
    assert demo_arguments(["--smoke", "--max-steps", "3"])[3].max_steps == 3  # flags still win
    assert demo_arguments([])[3].max_steps == 600 and demo_arguments([])[4].smoke is False

    out = tmp_path / "smoke"
    assert main(["demo", "--smoke", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "reliability_diagram.png",
        "training_curve.png",
    ):
        assert (out / name).is_file(), name
    assert f"reliability diagram: {out / 'reliability_diagram.png'}" in printed
    assert f"training curve: {out / 'training_curve.png'}" in printed
    assert (out / "training_curve.png").read_bytes().startswith(b"\x89PNG")
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["metrics"]["test_accuracy"] <= 1.0 and results["metrics"]["test_ece"] <= 1.0
    assert len(results["examples"]) == 2 and results["baseline_kind"] == "majority"
    assert re.search(r"step +20/20", printed)  # 20 steps, logged every 5
