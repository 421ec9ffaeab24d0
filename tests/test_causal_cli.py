"""The hf-cotmi command with decoder-only students: --student-type, kind detection, LoRA, demo, model card."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from cli_runs import evaluate_reproduces_the_runs_test_figures, one_error_line
from test_cli import FAST, SYNTHETIC, run

from hf_cotmi import build_tiny_causal_lm, build_word_tokenizer
from hf_cotmi.cli import demo_arguments, main
from hf_cotmi.data.synthetic import arithmetic_vocabulary
from hf_cotmi.demo import demo_defaults
from hf_cotmi.pipeline import SIDECAR_NAME
from hf_cotmi.students import load_student

QUESTION = "mia has 4 pens . mia buys 3 more . then mia loses 2 . how many pens does mia have now ?"


@pytest.fixture(scope="module")
def causal_trained_dir(tmp_path_factory) -> str:
    """`hf-cotmi train --student-type causal` without --model: the built-in Llama on the synthetic task."""
    out = tmp_path_factory.mktemp("causal-trained") / "out"
    argv = [
        "train",
        "--student-type",
        "causal",
        *SYNTHETIC,
        *FAST,
        "--tiny-d-model",
        "16",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    return str(out)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> str:
    """A tiny GPT-2 saved as a pretrained decoder-only student would be."""
    folder = tmp_path_factory.mktemp("gpt2-student")
    tokenizer = build_word_tokenizer(arithmetic_vocabulary())
    model = build_tiny_causal_lm(tokenizer, "gpt2", hidden_size=16, num_layers=1, num_heads=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_train_without_a_model_builds_the_causal_student_and_records_it(causal_trained_dir):
    folder = Path(causal_trained_dir)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["hidden_size"] == 16
    sidecar = json.loads((folder / SIDECAR_NAME).read_text())
    assert sidecar["student_type"] == "causal"
    card = (folder / "README.md").read_text()
    assert "AutoModelForCausalLM" in card and "AutoModelForSeq2SeqLM" not in card
    results = json.loads((folder / "results.json").read_text())
    assert 0.0 <= results["metrics"]["test_ece"] <= 1.0
    assert all(example["input"] not in example["label"] for example in results["examples"])  # prompt cut off
    model, _, description = load_student(causal_trained_dir, for_inference=True, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and "LlamaForCausalLM" in description


def test_evaluate_and_predict_detect_a_causal_student(causal_trained_dir, tmp_path, capsys):
    output = tmp_path / "metrics.json"
    code, out, err = run(capsys, "evaluate", "--model", causal_trained_dir, "--output-file", str(output))
    assert code == 0, err
    report = json.loads(output.read_text())
    assert report["num_examples"] == 8 and report["confidence_mode"] == "sequence"
    assert f"{'accuracy':<15} {report['accuracy']:.4f}" in out
    code, out, err = run(capsys, "predict", "--model", causal_trained_dir, "--jsonl", QUESTION)
    assert code == 0, err
    row = json.loads(out)
    assert row["input"] == QUESTION and 0.0 <= row["confidence"] <= 1.0
    assert QUESTION not in row["label"] and QUESTION not in row["rationale"]
    code, out, err = run(
        capsys, "predict", "--model", causal_trained_dir, "--label-candidates", "5,7,9", "--jsonl", QUESTION
    )
    assert code == 0, err
    assert json.loads(out)["label"] in {"5", "7", "9"}


def test_train_a_given_causal_model_with_lora(gpt2_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    code, stdout, err = run(
        capsys, "train", "--model", gpt2_dir, *SYNTHETIC, *FAST, "--use-peft", "--lora-r", "4",
        "--lora-target-modules", "c_attn", "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "GPT2LMHeadModel" in stdout and "LoRA" in stdout
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM"
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / SIDECAR_NAME).read_text())["student_type"] == "causal"
    code, stdout, err = run(capsys, "evaluate", "--model", str(out))
    assert code == 0, err
    code, stdout, err = run(capsys, "predict", "--model", str(out), "tom has 2 apples . how many ?")
    assert code == 0, err
    assert "rationale:" in stdout
    model, _, _ = load_student(str(out), for_inference=True, device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel"  # adapters merged into their causal base


def test_a_student_type_that_contradicts_the_model_is_a_usage_error(gpt2_dir, tmp_path, capsys):
    code, _, err = run(
        capsys, "train", "--model", gpt2_dir, "--student-type", "seq2seq", *SYNTHETIC, *FAST,
        "--output-dir", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 2
    assert "--student-type seq2seq" in err and "causal" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(
        capsys, "train", *SYNTHETIC, "--student-type", "decoder", "--output-dir", str(tmp_path)
    )
    assert code == 2 and "--student-type" in err


def test_a_rationale_length_the_context_cannot_hold_stops_train_before_training(
    gpt2_dir, tmp_path, capsys, monkeypatch
):
    """The tiny GPT-2 takes 1024 tokens: 1024 new ones leave no room for a prompt. Without the check the run
    trained to the end and failed in the test phase."""
    from hf_cotmi.trainer import DSSMITrainer

    def trained(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(DSSMITrainer, "train", trained)
    code, _, err = run(
        capsys, "train", "--model", gpt2_dir, *SYNTHETIC, *FAST, "--output-rationale",
        "--rationale-max-new-tokens", "1024", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2, err
    assert (
        "--rationale-max-new-tokens 1024 leaves no room for a prompt in the student's context of 1024" in err
    )


def _reworded(function, old: str, new: str):
    """``function``, its ``ValueError`` reworded (``old`` replaced by ``new`` in the message; the same error
    object, its fields kept): the library's message as a later rewording would leave it."""

    def reworded(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            message = str(error)
            error.args = (message.replace(old, new),)
            assert str(error) != message, message  # the rewording took
            raise

    return reworded


@pytest.mark.parametrize("reworded", [False, True], ids=["as-worded", "reworded"])
def test_a_label_length_the_context_cannot_hold_is_a_usage_error_naming_the_flag(
    gpt2_dir, tmp_path, capsys, monkeypatch, reworded
):
    """The trainer's own check of the test phase's lengths came first, with a plain ValueError (exit 1)
    naming the Python field (``generation_max_length=2000``), not the flag. Reworded so that it no longer
    reads ``generation_max_length=2000``, the CLI still names the flag and the value: it takes them from the
    error's fields (it read them out of the message text, and printed the rewording)."""
    from hf_cotmi.trainer import DSSMITrainer

    def trained(*args, **kwargs):
        raise AssertionError("trained")

    if reworded:
        check = _reworded(
            DSSMITrainer._check_generation_room,
            "generation_max_length=2000",
            "the label length (2000 tokens)",
        )
        monkeypatch.setattr(DSSMITrainer, "_check_generation_room", check)
    monkeypatch.setattr(DSSMITrainer, "train", trained)
    argv = ["train", "--model", gpt2_dir, *SYNTHETIC, *_without(FAST, "--generation-max-length")]
    code, _, err = run(
        capsys, *argv, "--generation-max-length", "2000", "--output-dir", str(tmp_path / "out")
    )  # fmt: skip
    assert code == 2, err
    line = one_error_line(err, "train")
    assert "--generation-max-length 2000 leaves no room for a prompt in the student's context of 1024" in line
    assert "generation_max_length" not in line and "ValueError" not in line and "label length" not in line


@pytest.fixture(scope="module")
def short_gpt2_dir(tmp_path_factory) -> str:
    """A tiny GPT-2 whose context is 128 tokens: the default --rationale-max-new-tokens (256) fills it."""
    folder = tmp_path_factory.mktemp("short-gpt2-student")
    tokenizer = build_word_tokenizer(arithmetic_vocabulary())
    model = build_tiny_causal_lm(
        tokenizer, "gpt2", hidden_size=16, num_layers=1, num_heads=2, max_positions=128
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _without(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value."""
    at = argv.index(option)
    return argv[:at] + argv[at + 2 :]


# features that fit the 128-token context, and the default --rationale-max-new-tokens (256)
SHORT = [*SYNTHETIC, "--max-input-length", "48", "--max-label-length", "8", "--max-rationale-length", "32"]
SHORT_FAST = _without(FAST, "--rationale-max-new-tokens")


def test_an_example_rationale_length_the_context_cannot_hold_stops_train_before_training(
    short_gpt2_dir, tmp_path, capsys, monkeypatch
):
    """The examples after the test phase generate a rationale of --rationale-max-new-tokens tokens even
    without --output-rationale; the default 256 leaves no room in a 128-token context. Without the check the
    run trained, wrote its test metrics and failed there."""
    from hf_cotmi.trainer import DSSMITrainer

    def trained(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(DSSMITrainer, "train", trained)
    code, _, err = run(
        capsys, "train", "--model", short_gpt2_dir, *SHORT, *SHORT_FAST, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2, err
    assert "--rationale-max-new-tokens 256 leaves no room for a prompt in the student's context of 128" in err
    assert "--num-examples-to-show 0" in err and "or a smaller --rationale-max-new-tokens" in err


def test_the_example_length_flag_comes_from_the_errors_fields_not_its_wording(
    short_gpt2_dir, tmp_path, capsys, monkeypatch
):
    """As above, for the check of the examples shown after the test phase."""
    from hf_cotmi import pipeline
    from hf_cotmi.trainer import DSSMITrainer

    def trained(*args, **kwargs):
        raise AssertionError("trained")

    limit = _reworded(pipeline.generation_prompt_limit, "rationale_max_new_tokens=256", "a rationale of 256")
    monkeypatch.setattr(pipeline, "generation_prompt_limit", limit)
    monkeypatch.setattr(DSSMITrainer, "train", trained)
    code, _, err = run(
        capsys, "train", "--model", short_gpt2_dir, *SHORT, *SHORT_FAST, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2, err
    line = one_error_line(err, "train")
    assert line.startswith(
        "hf-cotmi train: error: --rationale-max-new-tokens 256 leaves no room for a prompt in the student's "
        "context of 128 tokens (a decoder-only student generates after its prompt); ask for fewer than 128 new "
        "tokens; the examples shown after the test phase generate that many tokens (pass "
        "--num-examples-to-show 0 to show none, or a smaller --rationale-max-new-tokens)"
    ), line
    assert "a rationale of" not in line


def test_a_failure_after_training_still_saves_the_trained_model(
    short_gpt2_dir, tmp_path, capsys, monkeypatch
):
    """What the pre-check above would miss fails after training: the model and tokenizer are saved first."""
    from hf_cotmi import pipeline

    monkeypatch.setattr(pipeline, "_check_example_room", lambda trainer: None)
    out = tmp_path / "out"
    code, out_text, err = run(
        capsys, "train", "--model", short_gpt2_dir, *SHORT, *SHORT_FAST, "--output-dir", str(out)
    )
    assert code != 0
    assert "max_new_tokens=256 leaves no room" in err  # the example display's generate_texts
    files = set(p.name for p in out.iterdir())
    assert {"model.safetensors", "config.json", "tokenizer.json", SIDECAR_NAME} <= files, files
    assert "results.json" not in files  # it marks a finished run
    saved = load_student(str(out))
    assert saved.model.config.n_positions == 128
    # the command the message suggests works on the saved folder
    hint = re.search(r"; (hf-cotmi evaluate .+) redoes the test phase$", out_text, re.MULTILINE)
    assert hint, out_text
    program, *argv = shlex.split(hint.group(1))
    assert program == "hf-cotmi"
    code, evaluated, err = run(capsys, *argv)
    assert code == 0, err
    assert "accuracy" in evaluated


def test_a_failed_rescue_save_still_reports_the_original_error(short_gpt2_dir, tmp_path, capsys, monkeypatch):
    """A save that fails too (a full disk) is printed; the CLI's error is still the test phase's."""
    from hf_cotmi import pipeline
    from hf_cotmi.trainer import DSSMITrainer

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "_check_example_room", lambda trainer: None)
    monkeypatch.setattr(DSSMITrainer, "save_model", full_disk)
    code, out, err = run(
        capsys, "train", "--model", short_gpt2_dir, *SHORT, *SHORT_FAST, "--output-dir", str(tmp_path / "out")
    )
    assert code == 1
    assert "could not save the trained model: [Errno 28] No space left on device" in out
    assert "max_new_tokens=256 leaves no room" in err and "No space left" not in err


def test_an_interrupted_test_phase_still_saves_the_trained_model(gpt2_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C after training: the model is saved and the interruption says where and how to evaluate it."""
    from hf_cotmi import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_test_phase", interrupted)
    out = tmp_path / "out"
    code, _, err = run(capsys, "train", "--model", gpt2_dir, *SYNTHETIC, *FAST, "--output-dir", str(out))
    assert code == 130
    assert f"hf-cotmi train: interrupted; the trained model is saved in {out}/; " in err
    assert f"hf-cotmi evaluate --model {out} redoes the test phase" in err
    files = set(p.name for p in out.iterdir())
    assert {"model.safetensors", "config.json", "tokenizer.json", SIDECAR_NAME} <= files, files
    assert "results.json" not in files


def test_demo_defaults_for_the_causal_student():
    causal, seq2seq = demo_defaults(causal=True), demo_defaults()
    assert causal != seq2seq and causal["dataset"] == seq2seq["dataset"]
    model_args, *_ = demo_arguments(["--student-type", "causal"])
    assert model_args.student_type == "causal"
    *_, training_args, _, _ = demo_arguments(["--student-type", "causal"])
    assert training_args.learning_rate == causal["learning_rate"]
    assert training_args.max_steps == causal["max_steps"]
    # a given model keeps the real-model defaults, whatever --student-type says
    *_, training_args, _, _ = demo_arguments(["--student-type", "causal", "--model", "some/llama"])
    assert training_args.learning_rate == demo_defaults(real_model=True)["learning_rate"]


def test_demo_smoke_with_the_causal_student(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "demo", "--student-type", "causal", "--smoke", "--output-dir", str(out))
    assert code == 0, err
    assert "Llama (decoder-only) built from a config" in stdout
    for name in (
        "model.safetensors",
        "README.md",
        "reliability_diagram.png",
        "training_curve.png",
        SIDECAR_NAME,
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert "AutoModelForCausalLM" in (out / "README.md").read_text()


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} eot {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


@pytest.fixture(scope="module")
def chat_gpt2_dir(tmp_path_factory) -> str:
    """A tiny GPT-2 whose tokenizer has a chat template (turns end with "eot", not EOS)."""
    folder = tmp_path_factory.mktemp("chat-gpt2-student")
    tokenizer = build_word_tokenizer(arithmetic_vocabulary() + ["user assistant eot"])
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_tiny_causal_lm(tokenizer, "gpt2", hidden_size=16, num_layers=1, num_heads=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_chat_template_is_trained_saved_and_reused_by_evaluate_and_predict(chat_gpt2_dir, tmp_path, capsys):
    from test_causal_confidence import chat_log_likelihood

    out = tmp_path / "chat"
    code, _, err = run(
        capsys,
        "train",
        "--model",
        chat_gpt2_dir,
        *SYNTHETIC,
        *FAST,
        "--chat-template",
        "--output-dir",
        str(out),
    )
    assert code == 0, err
    assert json.loads((out / SIDECAR_NAME).read_text())["chat_template"] is True
    # the examples shown after training come from the chat prompt, as `predict` on the saved student does
    from hf_cotmi.pipeline import run_prediction

    shown = json.loads((out / "results.json").read_text())["examples"]
    assert shown
    again = run_prediction(str(out), [row["input"] for row in shown], device="cpu")
    for row, expected in zip(shown, again):
        assert (row["label"], row["rationale"]) == (expected["label"], expected["rationale"])
        assert row["confidence"] == pytest.approx(expected["confidence"], rel=1e-4)
    code, _, err = run(capsys, "evaluate", "--model", str(out), "--output-file", str(tmp_path / "m.json"))
    assert code == 0, err
    code, stdout, err = run(
        capsys, "predict", "--model", str(out), "--label-candidates", "5,7,9", "--jsonl", QUESTION
    )
    assert code == 0, err
    row = json.loads(stdout)
    model, tokenizer, _ = load_student(str(out), for_inference=True, device="cpu")
    scores = [chat_log_likelihood(model, tokenizer, QUESTION, c) for c in ("5", "7", "9")]
    best = max(range(3), key=lambda i: scores[i])
    total = sum(pytest.importorskip("math").exp(s - scores[best]) for s in scores)
    assert row["label"] == "579"[best]
    assert row["confidence"] == pytest.approx(1.0 / total, rel=1e-4)


def test_chat_template_without_a_template_or_with_a_seq2seq_student_is_a_clear_error(
    gpt2_dir, tiny_student_dir, tmp_path, capsys
):
    code, _, err = run(
        capsys,
        "train",
        "--model",
        gpt2_dir,
        *SYNTHETIC,
        *FAST,
        "--chat-template",
        "--output-dir",
        str(tmp_path / "a"),
    )
    assert code == 2 and "--chat-template" in err and "has no chat template" in err
    code, _, err = run(
        capsys, "train", "--model", tiny_student_dir, *SYNTHETIC, *FAST, "--chat-template",
        "--output-dir", str(tmp_path / "b"),
    )  # fmt: skip
    assert code == 2 and "error: --chat-template is for decoder-only (causal) students" in err


def test_evaluate_reproduces_a_causal_runs_own_test_figures(causal_trained_dir, tmp_path, capsys):
    # a decoder-only student's trainer reads generation_max_length as new tokens: evaluate must too
    evaluate_reproduces_the_runs_test_figures(capsys, causal_trained_dir, tmp_path)
