"""The hf-cotmi command: parsing, --config, one-line errors, and train/evaluate/predict end to end.

Training runs use a tiny T5 saved to a temporary folder and a few optimizer steps (offline, a few seconds
each); the real student is reached through the same `--model PATH` code path as a Hub name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import evaluate_reproduces_the_runs_test_figures, run
from conftest import DSS_DATA
from conftest import needs_dss as needs_dss_data
from huggingface_hub import ModelCard

from hf_cotmi import DSSMITrainingArguments
from hf_cotmi.cli import build_parser, demo_arguments, main
from hf_cotmi.pipeline import SIDECAR_NAME

needs_dss = needs_dss_data()

FAST = [
    "--max-steps",
    "2",
    "--per-device-train-batch-size",
    "4",
    "--per-device-eval-batch-size",
    "8",
    "--logging-steps",
    "1",
    "--save-strategy",
    "no",
    "--use-cpu",
    "--disable-tqdm",
    "true",
    "--report-to",
    "none",
    "--generation-max-length",
    "6",
    "--rationale-max-new-tokens",
    "8",
    "--num-examples-to-show",
    "2",
]
SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-test-size", "8"]


@pytest.fixture(scope="module")
def trained_dir(tiny_student_dir, tmp_path_factory) -> str:
    """A student trained by `hf-cotmi train` on the synthetic task (shared by evaluate/predict tests)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    assert main(["train", "--model", tiny_student_dir, *SYNTHETIC, *FAST, "--output-dir", str(out)]) == 0
    return str(out)


# ------------------------------------------------------------------------------------------------ parsing


def test_every_training_argument_is_a_flag_of_train_and_demo():
    for command in ("train", "demo"):
        options = build_parser(command)._option_string_actions
        for field in dataclasses.fields(DSSMITrainingArguments):
            if field.init:
                assert f"--{field.name}" in options, (command, field.name)
        for flag in (
            "--model",
            "--dataset",
            "--data-dir",
            "--train-file",
            "--use-peft",
            "--config",
            "--push-to-hub",
        ):
            assert flag in options, (command, flag)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "demo"])
def test_help_works_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"hf-cotmi {command}" in capsys.readouterr().out


def test_optional_bool_flags_work_as_bare_switches():
    from hf_cotmi.cli import _parse
    from hf_cotmi.run_arguments import CLIUsageError

    def training_args(*flags):
        return _parse("train", ["--output-dir", "out", *flags])[3]

    assert training_args("--disable-tqdm", "--use-cpu").disable_tqdm is True  # bare, followed by a flag
    assert training_args("--use-cpu", "--disable-tqdm").disable_tqdm is True  # bare, last
    assert training_args("--disable-tqdm", "false").disable_tqdm is False
    assert training_args("--disable-tqdm", "true", "--use-cpu").use_cpu is True
    with pytest.raises(CLIUsageError, match="disable"):
        training_args("--disable-tqdm", "maybe")


def test_config_file_sets_options_and_command_line_flags_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: google-t5/t5-small\n"
        "dataset: svamp\n"
        "data-dir: datasets\n"
        "use_peft: true\n"
        "lora_target_modules: [q, v]\n"
        "learning_rate: 1e-4\n"
        "mi_loss_weight: 0.2\n"
        "mi_variant: masked\n"
        "output_dir: from-config\n"
        "max_steps: 7\n"
    )
    from hf_cotmi.cli import _parse

    model_args, data_args, eval_args, training_args, _ = _parse(
        "train", ["--config", str(config), "--mi-loss-weight", "0.3", "--output-dir", "from-flag"]
    )
    assert model_args.model_name_or_path == "google-t5/t5-small"
    assert model_args.use_peft is True and model_args.lora_target_modules == ["q", "v"]
    assert data_args.dataset == "svamp" and data_args.data_dir == "datasets"
    assert training_args.learning_rate == pytest.approx(1e-4)
    assert training_args.mi_variant == "masked" and training_args.max_steps == 7
    assert training_args.mi_loss_weight == pytest.approx(0.3)  # the flag wins over the file
    assert training_args.output_dir == "from-flag"


def test_demo_defaults_adapt_to_a_real_model_and_real_data():
    *_, training_args, _, _ = demo_arguments([])
    assert training_args.max_steps == 600 and training_args.learning_rate == pytest.approx(5e-3)
    model_args, data_args, _, training_args, _, _ = demo_arguments(
        ["--model", "some/t5", "--dataset", "svamp"]
    )
    assert training_args.learning_rate == pytest.approx(5e-4)
    assert data_args.max_input_length == 512 and training_args.per_device_train_batch_size == 16
    *_, training_args, _, _ = demo_arguments(["--model", "some/t5", "--learning-rate", "0.01"])
    assert training_args.learning_rate == pytest.approx(0.01)  # explicit flags always win


# ------------------------------------------------------------------------------------------------- errors


def error_cases(tiny: str, tmp: Path) -> list[tuple[list[str], str]]:
    bad_key = tmp / "bad.yaml"
    bad_key.write_text("learning_rat: 0.1\n")
    not_mapping = tmp / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    out = ["--output-dir", str(tmp / "out")]
    return [
        (["train", "--model", tiny, "--dataset", "nope", *out], "unknown dataset 'nope'"),
        (["train", "--model", tiny, "--dataset", "svamp", *out], "--dataset svamp needs --data-dir"),
        (
            ["train", "--model", tiny, "--dataset", "svamp", "--data-dir", str(tmp / "nowhere"), *out],
            "does not exist",
        ),
        (["train", "--model", tiny, "--train-file", str(tmp / "missing.jsonl"), *out], "--train-file"),
        (["train", "--model", str(tmp / "no-model"), *SYNTHETIC, *out], "could not load the tokenizer"),
        # without --model, train builds the tiny student (tests/test_hardening_cli.py): no error any more
        (["train", *SYNTHETIC, *out, "--max-steps", "0"], "argument --max-steps: max_steps must be"),
        (["train", "--model", tiny, *out], "no data given"),
        (["train", "--bogus-flag", "1"], "unrecognized arguments: --bogus-flag"),
        (["train", "--learning-rate", "abc"], "invalid float value: 'abc'"),
        (["train", "--mi-variant", "nope"], "invalid choice"),
        (["train", "--model", tiny, *SYNTHETIC, "--mi-loss-weight", "-1", *out], "mi_loss_weight must be"),
        (["train", "--config", str(tmp / "missing.yaml")], "does not exist"),
        (["train", "--config", str(bad_key)], "unknown option 'learning_rat'"),
        (["demo", "--config", str(not_mapping)], "must hold a mapping"),
        (["evaluate"], "--model is required"),
        (["evaluate", "--model", tiny], "no data given"),
        (["predict", "--model", tiny], "no input text"),
        (["predict", "--model", tiny, "--input-file", str(tmp / "none.txt")], "--input-file"),
    ]


def test_errors_exit_non_zero_with_one_line_and_no_traceback(tiny_student_dir, tmp_path, capsys):
    for argv, expected in error_cases(tiny_student_dir, tmp_path):
        code, out, err = run(capsys, *argv)
        assert code != 0, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert expected in lines[0], (argv, lines[0])
        assert lines[0].startswith(f"hf-cotmi {argv[0]}: error: ")
        assert "Traceback" not in err + out


def test_debug_shows_the_traceback(tiny_student_dir, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--model", tiny_student_dir, "--dataset", "nope", "--debug")
    assert code == 2
    assert "Traceback" in err and "unknown dataset 'nope'" in err


def test_unknown_command_and_no_command(capsys):
    code, _, err = run(capsys, "fly")
    assert code == 2 and err.strip().count("\n") == 0 and "unknown command 'fly'" in err
    code, _, err = run(capsys)
    assert code == 2 and "no command given" in err.strip().splitlines()[-1]


def test_console_script_reports_one_line(tmp_path):
    script = Path(sys.executable).with_name("hf-cotmi")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "hf_cotmi.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, "train", "--model", "x", "--dataset", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hf-cotmi train: error: unknown dataset 'nope'; expected one of synthetic, svamp, cqa, esnli, anli1, "
        "or your own data with --train-file/--test-file"
    )


# ------------------------------------------------------------------------------------------- end to end


def test_train_saves_model_tokenizer_card_and_results(trained_dir):
    files = set(os.listdir(trained_dir))
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "results.json",
        SIDECAR_NAME,
    ):
        assert name in files, name
    assert "reliability_diagram.png" in files
    results = json.loads(Path(trained_dir, "results.json").read_text())
    metrics = results["metrics"]
    for key in ("test_accuracy", "test_ece", "test_avg_confidence"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics.get(key))
    # a cross-entropy of an 8-example test set under a barely trained student: finite and above zero
    assert math.isfinite(metrics["test_loss"]) and metrics["test_loss"] > 0.0, metrics.get("test_loss")
    assert metrics["test_avg_confidence"] > 0.0  # probabilities of generated labels are never all zero
    assert len(results["examples"]) == 2 and {"label", "rationale", "confidence", "gold"} <= set(
        results["examples"][0]
    )
    card = ModelCard.load(Path(trained_dir, "README.md"))
    assert "hf-cotmi" in card.data.tags
    assert {r.metric_name for r in card.data.eval_results} >= {"test_accuracy", "test_ece"}
    sidecar = json.loads(Path(trained_dir, SIDECAR_NAME).read_text())
    assert sidecar["predict_prefix"] == "predict: " and sidecar["data"]["dataset"] == "synthetic"


def test_evaluate_a_saved_student(trained_dir, tmp_path, capsys):
    output = tmp_path / "metrics.json"
    plot = tmp_path / "diagram.png"
    code, out, err = run(
        capsys, "evaluate", "--model", trained_dir, "--output-file", str(output), "--plot-file", str(plot)
    )
    assert code == 0, err
    report = json.loads(output.read_text())
    assert report["num_examples"] == 8  # the sidecar brought back the same synthetic test split
    assert report["confidence_mode"] == "sequence" and report["split"] == "test"
    for key in ("accuracy", "ece", "avg_confidence"):
        assert 0.0 <= report[key] <= 1.0
        assert f"{key:<15} {report[key]:.4f}" in out
    assert plot.read_bytes().startswith(b"\x89PNG")
    # --max-input-length overrides the length the training run saved; without it the saved one counts
    saved = json.loads((Path(trained_dir) / SIDECAR_NAME).read_text())["max_input_length"]
    reports = {}
    for name, extra in {
        "saved": [],
        "same": ["--max-input-length", str(saved)],
        "cut": ["--max-input-length", "4"],
    }.items():
        code, _, err = run(
            capsys, "evaluate", "--model", trained_dir, "--output-file", str(tmp_path / name), *extra
        )
        assert code == 0, err
        reports[name] = json.loads((tmp_path / name).read_text())
    assert reports["same"]["avg_confidence"] == reports["saved"]["avg_confidence"]
    assert reports["cut"]["avg_confidence"] != pytest.approx(reports["saved"]["avg_confidence"], rel=1e-3)


def test_evaluate_reproduces_the_runs_own_test_figures(trained_dir, tmp_path, capsys):
    # the label length the run generated with: training's generation_max_length counts a seq2seq decoder's
    # start token (generate's max_length), so evaluate must allow one new token fewer, not as many
    evaluate_reproduces_the_runs_test_figures(capsys, trained_dir, tmp_path)


def test_predict_prints_label_rationale_and_confidence(trained_dir, tmp_path, capsys):
    question = "mia has 4 pens . mia buys 3 more . then mia loses 2 . how many pens does mia have now ?"
    code, out, err = run(capsys, "predict", "--model", trained_dir, question)
    assert code == 0, err
    assert f"input:      {question}" in out
    assert "label:" in out and "rationale:" in out and "confidence:" in out

    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        json.dumps({"input": question}) + "\n" + "tom has 2 apples . how many apples does tom have now ?\n"
    )
    saved = tmp_path / "predictions.jsonl"
    code, out, err = run(
        capsys,
        "predict",
        "--model",
        trained_dir,
        "--input-file",
        str(inputs),
        "--jsonl",
        "--output-file",
        str(saved),
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [row["input"] for row in rows] == [
        question,
        "tom has 2 apples . how many apples does tom have now ?",
    ]
    assert all(0.0 <= row["confidence"] <= 1.0 and isinstance(row["rationale"], str) for row in rows)
    assert [json.loads(line) for line in saved.read_text().splitlines()] == rows

    code, out, _ = run(
        capsys, "predict", "--model", trained_dir, "--label-candidates", "5,7,9", "--jsonl", question
    )
    row = json.loads(out)
    assert code == 0 and row["label"] in {"5", "7", "9"}
    # candidates that name no label are an error, as in evaluate (not a silent switch to sequence confidence)
    code, out, err = run(capsys, "predict", "--model", trained_dir, "--label-candidates", " , ", question)
    assert code != 0 and "--label-candidates ' , ' names no label" in err and not out


def test_a_checkpoint_carries_the_runs_settings_so_evaluate_reads_it_as_the_final_folder(
    tiny_student_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    fast = [*FAST]
    fast[fast.index("--save-strategy") + 1] = "steps"
    code, _, err = run(
        capsys, "train", "--model", tiny_student_dir, *SYNTHETIC, *fast, "--save-steps", "2",
        "--predict-prefix", "answer: ", "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    final = json.loads((out / SIDECAR_NAME).read_text())
    assert json.loads((out / "checkpoint-2" / SIDECAR_NAME).read_text()) == final
    assert final["predict_prefix"] == "answer: "
    reports = []
    for folder in (out, out / "checkpoint-2"):  # the same weights: the run ended at step 2
        code, _, err = run(
            capsys, "evaluate", "--model", str(folder), "--output-file", str(tmp_path / "m.json")
        )
        assert code == 0, err
        reports.append(json.loads((tmp_path / "m.json").read_text()))
    assert reports[0]["avg_confidence"] == pytest.approx(reports[1]["avg_confidence"])
    assert reports[0]["num_examples"] == reports[1]["num_examples"] == 8


def test_lora_on_the_built_in_student_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "lora"
    code, _, err = run(capsys, "train", *SYNTHETIC, *FAST, "--use-peft", "--output-dir", str(out))
    assert code == 2
    assert err.strip().endswith("could never be loaded") and "--use-peft needs --model" in err
    assert not out.exists()


def test_train_with_lora_saves_adapters_that_evaluate_and_predict_load(tiny_student_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    code, stdout, err = run(
        capsys, "train", "--model", tiny_student_dir, *SYNTHETIC, *FAST, "--use-peft", "--lora-r", "4",
        "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "LoRA" in stdout
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    code, stdout, err = run(capsys, "evaluate", "--model", str(out))
    assert code == 0, err
    assert "accuracy" in stdout
    code, stdout, err = run(capsys, "predict", "--model", str(out), "tom has 2 apples . how many ?")
    assert code == 0, err
    assert "rationale:" in stdout
    # saved adapters load trainable, and training from them (with or without --use-peft) trains those
    # adapters further rather than stacking a second, fresh set on frozen ones
    import torch
    from safetensors.torch import load_file

    from hf_cotmi.students import load_student

    student = load_student(str(out))
    trainable = [name for name, p in student.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in name for name in trainable)
    before = load_file(out / "adapter_model.safetensors")
    for extra in ([], ["--use-peft"]):
        again = tmp_path / f"again{len(extra)}"
        code, _, err = run(
            capsys, "train", "--model", str(out), *SYNTHETIC, *FAST, *extra, "--output-dir", str(again)
        )
        assert code == 0, err
        after = load_file(again / "adapter_model.safetensors")
        assert set(after) == set(before)  # the same adapters, no second set
        assert any(not torch.equal(after[k], before[k]) for k in before)  # and they were trained


def test_train_on_your_own_files_with_other_column_names(tiny_student_dir, tmp_path, capsys):
    rows = [
        {
            "question": f"tom has {a} apples . tom buys {b} more . how many ?",
            "answer": a + b,
            "why": f"{a} + {b} = {a + b} .",
        }
        for a in range(1, 5)
        for b in range(1, 4)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[8:]))
    out = tmp_path / "own"
    code, _, err = run(
        capsys, "train", "--model", tiny_student_dir, "--train-file", str(train), "--test-file", str(test),
        "--input-column", "question", "--label-column", "answer", "--rationale-column", "why", *FAST,
        "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["examples"][0]["gold"] == str(rows[8]["answer"])
    assert "test_accuracy" in results["metrics"]


@needs_dss
def test_train_on_svamp_compares_equations(tiny_student_dir, tmp_path, capsys):
    out = tmp_path / "svamp"
    code, stdout, err = run(
        capsys, "train", "--model", tiny_student_dir, "--dataset", "svamp", "--data-dir", str(DSS_DATA),
        "--max-train-samples", "16", "--max-test-samples", "8", *FAST, "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "answers compared as equation" in stdout
    sidecar = json.loads((out / SIDECAR_NAME).read_text())
    assert sidecar["task"] == "equation" and sidecar["dataset"] == "svamp"
    assert ModelCard.load(out / "README.md").data.datasets == ["svamp"]


@needs_dss
def test_train_on_esnli_uses_candidate_confidence(tiny_student_dir, tmp_path, capsys):
    out = tmp_path / "esnli"
    code, stdout, err = run(
        capsys, "train", "--model", tiny_student_dir, "--dataset", "esnli", "--data-dir", str(DSS_DATA),
        "--train-split", "valid", "--max-train-samples", "16", "--max-test-samples", "8", *FAST,
        "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "candidates confidence" in stdout
    sidecar = json.loads((out / SIDECAR_NAME).read_text())
    assert sidecar["label_candidates"] == ["entailment", "neutral", "contradiction"]
    results = json.loads((out / "results.json").read_text())
    assert all(row["label"] in sidecar["label_candidates"] for row in results["examples"])


@needs_dss
def test_examples_shown_after_nli_training_join_premise_and_hypothesis_as_the_features_do(tmp_path, capsys):
    """A student whose EOS is not "</s>": the examples are prompted with its EOS, as training was."""
    from hf_cotmi import build_tiny_causal_lm, build_word_tokenizer, load_dss_dataset

    rows = load_dss_dataset("esnli", DSS_DATA, splits=["test"])["test"]
    tokenizer = build_word_tokenizer(rows["premise"][:50] + ["entailment neutral contradiction"])
    tokenizer.eos_token = "<sep>"
    student = tmp_path / "student"
    build_tiny_causal_lm(tokenizer, "gpt2", hidden_size=16, num_layers=1, num_heads=2).save_pretrained(
        student
    )
    tokenizer.save_pretrained(student)
    out = tmp_path / "esnli"
    code, _, err = run(
        capsys, "train", "--model", str(student), "--dataset", "esnli", "--data-dir", str(DSS_DATA),
        "--train-split", "valid", "--max-train-samples", "8", "--max-test-samples", "2", *FAST,
        "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads((out / "results.json").read_text())["examples"]
    joined = {f"{p}<sep>{h}" for p, h in zip(rows["premise"], rows["hypothesis"])}
    assert len(shown) == 2 and all(row["input"] in joined and "</s>" not in row["input"] for row in shown)
