"""Issue 14, the command line: each case a demanding user tried, run through ``hf_cotmi.cli.main``.

Training runs use the built-in tiny student or the saved tiny T5 of conftest, a few steps on a few dozen
examples (a few seconds each).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_runs import one_error_line, run

from hf_cotmi.checkpoints import checkpoint_problems
from hf_cotmi.cli import main
from hf_cotmi.data.synthetic import arithmetic_vocabulary
from hf_cotmi.students import DEFAULT_INPUT_LENGTH_LIMIT, input_length_limit, tokenizer_files_problem

SMALL_RUN = [
    "--smoke", "--max-steps", "2", "--synthetic-train-size", "32", "--synthetic-test-size", "4",
    "--num-examples-to-show", "1", "--use-cpu",
]  # fmt: skip


# ------------------------------------------------------------------ bad values when arguments are built


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--max-steps", "0"], "argument --max-steps: max_steps must be"),
        (["--max_steps=0"], "argument --max_steps: max_steps must be"),
        (["--per-device-train-batch-size", "0"], "argument --per-device-train-batch-size: "),
        (["--per-device-eval-batch-size", "0"], "argument --per-device-eval-batch-size: "),
        (["--mi-loss-weight", "nan"], "argument --mi-loss-weight: mi_loss_weight must be a finite"),
        (["--mi-loss-weight", "inf"], "argument --mi-loss-weight: "),
        (["--label-loss-weight", "-1"], "argument --label-loss-weight: label_loss_weight must be"),
        (["--rationale-loss-weight", "-0.5"], "argument --rationale-loss-weight: "),
        (["--fp16"], "argument --fp16: fp16=True cannot take effect"),
        (
            ["--label-loss-weight", "0", "--rationale-loss-weight", "0", "--mi-loss-weight", "0"],
            "label_loss_weight, rationale_loss_weight and mi_loss_weight are all 0",
        ),
    ],
)
def test_values_refused_by_the_argument_classes_exit_2_naming_the_flag(tmp_path, capsys, flags, named):
    code, out, err = run(capsys, "demo", "--output-dir", str(tmp_path / "out"), *SMALL_RUN, *flags)
    assert code == 2
    line = one_error_line(err, "demo")
    assert line.startswith(f"hf-cotmi demo: error: {named}"), line
    assert not (tmp_path / "out").exists()


def test_a_refused_value_from_a_config_file_names_the_file_and_key(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("mi_loss_weight: -2\n")
    code, _, err = run(capsys, "train", "--config", str(config), "--output-dir", str(tmp_path / "out"))
    assert code == 2
    line = one_error_line(err, "train")
    assert f"error: --config {str(config)!r}, key 'mi_loss_weight': mi_loss_weight must be" in line
    # the command line wins over the file, and then names the flag
    code, _, err = run(
        capsys, "train", "--config", str(config), "--mi-loss-weight", "-3", "--output-dir", str(tmp_path)
    )
    assert code == 2 and "error: argument --mi-loss-weight: " in one_error_line(err, "train")


# ----------------------------------------------------------------------- a student without a tokenizer


@pytest.fixture
def no_tokenizer_dir(tiny_student_dir, tmp_path) -> Path:
    """The saved tiny student with its tokenizer files removed (config and weights only)."""
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_student_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def test_the_saved_student_is_usable_before_its_tokenizer_is_removed(tiny_student_dir):
    assert tokenizer_files_problem(tiny_student_dir) is None


@pytest.mark.parametrize("kept", [(), ("tokenizer_config.json",)])
def test_predict_evaluate_and_train_refuse_a_folder_without_tokenizer_files(
    no_tokenizer_dir, tiny_student_dir, tmp_path, capsys, kept
):
    for name in kept:
        shutil.copy(Path(tiny_student_dir) / name, no_tokenizer_dir / name)
    commands = [
        ["predict", "--model", str(no_tokenizer_dir), "tom has 3 apples ."],
        ["evaluate", "--model", str(no_tokenizer_dir), "--dataset", "synthetic", "--synthetic-test-size", "4"],
        ["train", "--model", str(no_tokenizer_dir), "--dataset", "synthetic", "--output-dir", str(tmp_path / "o")],
    ]  # fmt: skip
    for argv in commands:
        code, out, err = run(capsys, *argv)
        assert code == 2, (argv, out)
        line = one_error_line(err, argv[0])
        assert f"--model {str(no_tokenizer_dir)!r}: no tokenizer files" in line, line
        assert "expected tokenizer.json" in line
        assert "label:" not in out and "accuracy" not in out
    assert not (tmp_path / "o").exists()


def test_a_folder_without_a_saved_model_says_so(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (
        ["predict", "--model", str(empty), "tom has 3 apples ."],
        ["evaluate", "--model", str(empty)],
    ):
        code, _, err = run(capsys, *argv)
        line = one_error_line(err, argv[0])
        assert code == 2 and f"--model {str(empty)!r} holds no saved model (no config.json" in line, line


def write_tokenizer_config(folder: Path, tokenizer_class: str) -> None:
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))


@pytest.mark.parametrize(
    "tokenizer_class,files,usable",
    [
        ("T5Tokenizer", ["spiece.model"], True),
        ("T5TokenizerFast", ["spiece.model"], True),
        ("T5Tokenizer", [], False),
        ("GPT2Tokenizer", ["vocab.json", "merges.txt"], True),
        ("GPT2Tokenizer", ["vocab.json"], False),  # a BPE vocabulary needs its merges
        ("ByT5Tokenizer", [], True),  # byte-level: no vocabulary file at all
        ("BertTokenizer", ["tokenizer.json"], True),
        (None, ["vocab.txt"], True),
        (None, ["vocab.json", "merges.txt"], True),
        (None, ["vocab.json"], False),
        (None, ["config.json", "model.safetensors", "special_tokens_map.json"], False),
    ],
)
def test_which_files_make_a_usable_tokenizer(tmp_path, tokenizer_class, files, usable):
    if tokenizer_class:
        write_tokenizer_config(tmp_path, tokenizer_class)
    for name in files:
        (tmp_path / name).write_text("{}")
    problem = tokenizer_files_problem(tmp_path)
    assert (problem is None) == usable, problem
    if not usable:
        assert str(tmp_path) in problem and "expected tokenizer.json" in problem
        if tokenizer_class == "GPT2Tokenizer":
            assert "vocab.json and merges.txt" in problem


def test_a_hub_name_is_left_to_the_hub(tmp_path):
    assert tokenizer_files_problem(tmp_path / "google-t5" / "t5-small") is None


# --------------------------------------------------------------------------- predict input truncation


class StackInputLengths:
    """Records the ``input_ids`` length of every T5 encoder or decoder stack call (generate calls both)."""

    def __init__(self, monkeypatch):
        from transformers.models.t5.modeling_t5 import T5Stack

        self.lengths: list[int] = []
        original = T5Stack.forward

        @functools.wraps(original)
        def forward(stack, input_ids=None, *args, **kwargs):
            if input_ids is not None:
                self.lengths.append(int(input_ids.shape[-1]))
            return original(stack, input_ids, *args, **kwargs)

        monkeypatch.setattr(T5Stack, "forward", forward)


def test_predict_without_a_sidecar_truncates_to_the_tokenizers_limit(
    tiny_student_dir, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "student"
    shutil.copytree(tiny_student_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 24
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert not (folder / "hf_cotmi_config.json").exists()
    long_input = " ".join(["tom has 3 apples ."] * 600)  # 3000 words
    probe = StackInputLengths(monkeypatch)
    code, out, err = run(capsys, "predict", "--model", str(folder), "--max-new-tokens", "2",
                         "--rationale-max-new-tokens", "2", "--jsonl", long_input)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["input"] == long_input
    assert probe.lengths and max(probe.lengths) <= 24, probe.lengths


def test_the_input_limit_falls_back_to_the_model_config_then_the_default():
    no_limit = SimpleNamespace(model_max_length=int(1e30))  # what transformers writes for "none"
    config = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048))
    assert input_length_limit(config, SimpleNamespace(model_max_length=300)) == 300
    assert input_length_limit(config, no_limit) == 2048
    assert input_length_limit(SimpleNamespace(config=SimpleNamespace(n_positions=1024)), no_limit) == 1024
    assert (
        input_length_limit(SimpleNamespace(config=SimpleNamespace()), no_limit) == DEFAULT_INPUT_LENGTH_LIMIT
    )
    assert DEFAULT_INPUT_LENGTH_LIMIT == 512


# -------------------------------------------------------------------------------------------- resuming


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory) -> Path:
    """A 2-step demo run with a checkpoint after each step."""
    out = tmp_path_factory.mktemp("resume") / "run"
    code = main(
        ["demo", "--output-dir", str(out), *SMALL_RUN, "--save-strategy", "steps", "--save-steps", "1"]
    )
    assert code == 0
    return out


@pytest.mark.parametrize("value", ["true", "latest", "True"])
def test_resume_true_or_latest_skips_a_half_written_checkpoint(checkpointed_run, tmp_path, capsys, value):
    out = tmp_path / "run"
    shutil.copytree(checkpointed_run, out)
    half = out / "checkpoint-3"  # what SIGKILL while saving leaves: config files only
    half.mkdir()
    shutil.copy(out / "checkpoint-2" / "config.json", half / "config.json")
    code, stdout, err = run(
        capsys, "demo", "--output-dir", str(out), *SMALL_RUN, "--max-steps", "3", "--logging-steps", "1",
        "--save-strategy", "steps", "--save-steps", "1", "--resume_from_checkpoint", value,
    )  # fmt: skip
    assert code == 0, err
    assert f"warning: skipping the incomplete checkpoint {half}: no model weights" in stdout
    assert f"resuming from {out / 'checkpoint-2'}" in stdout
    steps = re.findall(r"^  step (\d+)/3", stdout, flags=re.MULTILINE)
    assert steps == ["3"], stdout  # steps 1 and 2 came from checkpoint-2
    assert checkpoint_problems(half) == []  # step 3 was saved over the half-written folder


def test_resuming_a_finished_run_says_so_and_trains_no_further_step(tmp_path, capsys):
    out = tmp_path / "run"
    # 4 steps an epoch: the 2-step budget ends inside the epoch, where transformers alone steps once more
    flags = [*SMALL_RUN, "--per-device-train-batch-size", "8", "--logging-steps", "1", "--save-steps", "2"]
    code, _, err = run(capsys, "demo", "--output-dir", str(out), *flags, "--save-strategy", "steps")
    assert code == 0, err
    code, stdout, err = run(
        capsys, "demo", "--output-dir", str(out), *flags, "--save-strategy", "steps",
        "--resume_from_checkpoint", "latest",
    )  # fmt: skip
    assert code == 0, err
    assert f"resuming from {out / 'checkpoint-2'}" in stdout
    assert "warning: the checkpoint resumed from already reached max_steps=2 (global step 2)" in stdout
    assert re.findall(r"^  step (\d+)/", stdout, flags=re.MULTILINE) == []
    assert not (out / "checkpoint-3").exists()


def test_resume_without_a_complete_checkpoint_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-1").mkdir(parents=True)
    code, _, err = run(
        capsys, "demo", "--output-dir", str(out), *SMALL_RUN, "--resume_from_checkpoint", "true"
    )
    assert code == 2
    line = one_error_line(err, "demo")
    assert "holds no complete checkpoint-N folder (incomplete: checkpoint-1)" in line


# ------------------------------------------------------------------------------ train without --model


def test_train_without_model_builds_the_tiny_student_its_flags_describe(tmp_path, capsys):
    out = tmp_path / "tiny"
    code, stdout, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-test-size", "4",
        "--max-steps", "1", "--per-device-train-batch-size", "4", "--save-strategy", "no", "--use-cpu",
        "--report-to", "none", "--disable-tqdm", "--num-examples-to-show", "0", "--generation-max-length", "4",
        "--tiny-d-model", "16", "--tiny-num-layers", "1", "--tiny-num-heads", "2", "--tiny-d-ff", "32",
        "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "no --model given, so the student is a small T5 built from a config (--tiny-* options)" in stdout
    assert "note: --learning-rate 5e-05 is the default for a pre-trained student" in stdout
    assert "student: T5 built from a config" in stdout and "d_model 16, 1+1 layers" in stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["d_model"], config["num_layers"], config["num_heads"], config["d_ff"]) == (16, 1, 2, 32)
    vocabulary = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    numbers = arithmetic_vocabulary()[0].split()  # every number the synthetic task can produce
    assert len(numbers) > 20 and set(numbers) <= set(vocabulary)


def test_train_help_says_what_happens_without_model(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Without --model the student is a small T5 built from a config" in text
    assert "--tiny-d-model" in text


# ------------------------------------------------------------------------------- what the data did


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def sparse_rationales(tmp_path) -> tuple[Path, Path, int]:
    """100 training records of which 67 have no rationale (null, empty or blank), and a test file."""
    rows = []
    for i in range(100):
        a, b = i % 9, i % 7
        rationale = f"{a} + {b} = {a + b} ." if i % 3 == 1 else [None, "", "  "][(i // 3) % 3]
        rows.append({"input": f"tom has {a} apples . tom buys {b} more . how many ?", "label": str(a + b),
                     "rationale": rationale})  # fmt: skip
    missing = sum(1 for row in rows if not (row["rationale"] or "").strip())
    train = write_rows(tmp_path / "train.jsonl", rows)
    test = write_rows(tmp_path / "test.jsonl", rows[:6])
    return train, test, missing


def own_files_run(tmp_path, sparse, *flags):
    train, test, _ = sparse
    return ["demo", "--output-dir", str(tmp_path / "out"), *SMALL_RUN, "--train-file", str(train),
            "--test-file", str(test), *flags]  # fmt: skip


def test_demo_prints_the_loaders_and_the_tokenisers_counts(tmp_path, capsys, sparse_rationales):
    _, _, missing = sparse_rationales
    assert missing == 67
    code, out, err = run(capsys, *own_files_run(tmp_path, sparse_rationales, "--max-rationale-length", "4"))
    assert code == 0, err
    assert "loader counts: " in out and "train: 100 records, 67 missing rationales" in out
    # every present rationale ("a + b = c ." and EOS: 6 tokens) is cut to 4 tokens: 33 of them
    (train_line,) = [line for line in out.splitlines() if line.startswith("  train: ")]
    assert "truncated: 0 inputs, 0 labels, 33 rationales" in train_line
    assert "67 empty rationales kept, 0 dropped" in train_line
    assert "note: 67 of 100 training rationales are missing: kept, with only the end-of-sequence token" in out


def test_train_prints_the_counts_of_a_dss_dataset(tiny_student_dir, tmp_path, capsys, dss_data_dir):
    code, out, err = run(
        capsys, "train", "--model", tiny_student_dir, "--dataset", "svamp", "--data-dir", str(dss_data_dir),
        "--max-train-samples", "8", "--max-test-samples", "2", "--max-steps", "1", "--use-cpu",
        "--per-device-train-batch-size", "4", "--save-strategy", "no", "--report-to", "none",
        "--num-examples-to-show", "0", "--generation-max-length", "4", "--output-dir", str(tmp_path / "svamp"),
    )  # fmt: skip
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("loader counts: ")]
    assert re.search(r"svamp \(.*svamp, labels: gt\): train: \d+ records, \d+ unparsed", line), line
    assert "tokeniser counts:" in out and re.search(r"^  train: 8 examples; truncated: ", out, re.MULTILINE)


def test_empty_rationale_drop_removes_and_counts_those_examples(tmp_path, capsys, sparse_rationales):
    code, out, err = run(capsys, *own_files_run(tmp_path, sparse_rationales, "--empty-rationale", "drop"))
    assert code == 0, err
    (train_line,) = [line for line in out.splitlines() if line.startswith("  train: ")]
    assert (
        train_line.startswith("  train: 33 examples;") and "0 empty rationales kept, 67 dropped" in train_line
    )
    assert "note: 67 of 100 training rationales are missing: those examples were dropped" in out
    # held-out splits are evaluated whole
    (test_line,) = [line for line in out.splitlines() if line.startswith("  test: ")]
    assert test_line.startswith("  test: 6 examples;") and "4 empty rationales kept, 0 dropped" in test_line


def test_empty_rationale_error_stops_naming_the_split_and_count(tmp_path, capsys, sparse_rationales):
    code, _, err = run(capsys, *own_files_run(tmp_path, sparse_rationales, "--empty-rationale", "error"))
    assert code == 1
    line = one_error_line(err, "demo")
    assert "split 'train': 67 of 100 examples have no rationale (first rows: [0, 2, 3, 5, 6])" in line
    assert "--empty-rationale keep" in line and "--empty-rationale drop" in line
    # its ways on are the flags: not with_rationale=False nor empty_rationale='keep', Python's
    assert "with_rationale" not in line and "empty_rationale=" not in line
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_empty_rationale_refusal_is_worded_from_the_errors_attributes(
    tmp_path, capsys, sparse_rationales, monkeypatch
):
    """The CLI words the refusal from the error's split and counts, not by reading its message: reworded,
    the CLI's line is the same."""
    from hf_cotmi.data.features import EmptyRationaleError

    monkeypatch.setattr(EmptyRationaleError, "__str__", lambda error: "some rationales are missing")
    code, _, err = run(capsys, *own_files_run(tmp_path, sparse_rationales, "--empty-rationale", "error"))
    assert code == 1
    assert one_error_line(err, "demo") == (
        "hf-cotmi demo: error: EmptyRationaleError: split 'train': 67 of 100 examples have no rationale (first rows: "
        "[0, 2, 3, 5, 6]); keep them with --empty-rationale keep (their rationale target is only the "
        "end-of-sequence token) or drop them with --empty-rationale drop (--debug shows the traceback)"
    )


def test_empty_rationale_takes_only_its_three_values(tmp_path, capsys, sparse_rationales):
    code, _, err = run(capsys, *own_files_run(tmp_path, sparse_rationales, "--empty-rationale", "skip"))
    assert code == 2 and "invalid choice: 'skip'" in one_error_line(err, "demo")


# --------------------------------------------------------------------------------- predict --input-file


def test_predict_input_file_reads_one_input_per_newline(tiny_student_dir, tmp_path, capsys):
    inputs = tmp_path / "inputs.txt"
    first = "tom has 3 apples .\u2028tom buys 2 more .\u0085how many ?"  # line and paragraph separators
    inputs.write_text(f"{first}\nmia has 4 pens . how many ?\n", encoding="utf-8")
    code, out, err = run(capsys, "predict", "--model", tiny_student_dir, "--input-file", str(inputs), "--jsonl",
                         "--max-new-tokens", "2", "--rationale-max-new-tokens", "2")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip("\n").split("\n")]  # JSON Lines: one record per \n
    assert [row["input"] for row in rows] == [first, "mia has 4 pens . how many ?"]


# -------------------------------------------------------------------------- generate-rationales --config


def test_generate_rationales_takes_a_config_file(tmp_path, capsys):
    config = tmp_path / "teacher.yaml"
    config.write_text("input_file: in.jsonl\noutput_file: out.jsonl\nnum_samples: 3\n")
    from hf_cotmi.cli import _parse

    (args, common) = _parse("generate-rationales", ["--config", str(config), "--num-samples", "5"])
    assert (args.input_file, args.output_file, args.num_samples) == ("in.jsonl", "out.jsonl", 5)
    assert common.config == str(config)
    # through the command: the file's options are read (the first missing piece is the teacher)
    code, _, err = run(capsys, "generate-rationales", "--config", str(config))
    assert code == 2 and "give one teacher" in one_error_line(err, "generate-rationales")
    config.write_text("num_sample: 3\n")
    code, _, err = run(capsys, "generate-rationales", "--config", str(config))
    line = one_error_line(err, "generate-rationales")
    assert code == 2 and f"--config {str(config)!r}: unknown option 'num_sample'" in line
    config.write_text("concurrency: many\n")
    code, _, err = run(capsys, "generate-rationales", "--config", str(config))
    assert code == 2 and "'concurrency' must be an integer; got 'many' (str)" in one_error_line(
        err, "generate-rationales"
    )


def test_an_abbreviated_option_and_a_config_naming_a_config_are_refused(tmp_path, capsys):
    config = tmp_path / "teacher.yaml"
    config.write_text("num_sample: 3\n")  # a typo: must not be skipped by spelling --config short
    code, _, err = run(capsys, "generate-rationales", "--conf", str(config))
    assert code == 2 and "unrecognized arguments: --conf" in one_error_line(err, "generate-rationales")
    config.write_text(f"config: {tmp_path / 'other.yaml'}\n")
    code, _, err = run(capsys, "generate-rationales", "--config", str(config))
    assert code == 2 and "a config file cannot name another ('config')" in one_error_line(
        err, "generate-rationales"
    )
    code, _, err = run(capsys, "generate-rationales", "--config=")
    assert code == 2 and "--config needs a YAML file" in one_error_line(err, "generate-rationales")


def test_lora_target_modules_take_all_linear_and_comma_separated_names(tiny_student_dir):
    from peft import get_peft_model

    from hf_cotmi.cli import _parse
    from hf_cotmi.students import load_student, peft_config

    for flags, adapted in ((["all-linear"], {"q", "k", "v", "o", "wi", "wo"}), (["q,v"], {"q", "v"})):
        model_args = _parse("train", ["--lora-target-modules", *flags])[0]
        model = get_peft_model(load_student(tiny_student_dir).model, peft_config(model_args))
        names = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
        assert names == adapted, (flags, names)


def test_evaluate_takes_the_data_flags_given_and_refuses_the_ones_it_would_ignore(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "demo", *SMALL_RUN, "--output-dir", str(out))
    assert code == 0, err
    metrics = tmp_path / "m.json"
    code, _, err = run(capsys, "evaluate", "--model", str(out), "--output-file", str(metrics))
    assert code == 0 and json.loads(metrics.read_text())["num_examples"] == 4  # the saved data source
    code, _, err = run(
        capsys, "evaluate", "--model", str(out), "--synthetic-test-size", "3", "--output-file", str(metrics)
    )
    assert code == 0 and json.loads(metrics.read_text())["num_examples"] == 3  # a flag given wins
    for flags, named in (
        (
            ["--test-split", "valid"],
            "--test-split is not used by evaluate (evaluate reads one split: --split)",
        ),
        (["--max-train-samples", "5"], "--max-train-samples is not used by evaluate"),
        (["--num-examples-to-show", "5"], "--num-examples-to-show is not used by evaluate"),
    ):
        code, _, err = run(capsys, "evaluate", "--model", str(out), *flags)
        assert code == 2 and named in one_error_line(err, "evaluate"), err
    # an output file that is a folder is refused before any work; a missing parent folder is made
    for command, extra in (("evaluate", []), ("predict", ["tom has 2 apples . how many ?"])):
        code, _, err = run(capsys, command, "--model", str(out), "--output-file", str(tmp_path), *extra)
        assert code == 2 and "is a folder" in one_error_line(err, command)
    nested = tmp_path / "new" / "folder" / "p.jsonl"
    code, _, err = run(
        capsys, "predict", "--model", str(out), "--output-file", str(nested), "tom has 2 apples"
    )
    assert code == 0 and nested.is_file(), err


# ------------------------------------------------------------------------------------- a diverging run

DIVERGING = ["--learning-rate", "1e3", "--max-grad-norm", "0", "--optim", "sgd", "--logging-steps", "1"]


def test_a_diverging_demo_exits_1_saves_no_model_and_prints_the_real_loss(tmp_path, capsys):
    out = tmp_path / "diverged"
    code, stdout, err = run(
        capsys, "demo", "--output-dir", str(out), *SMALL_RUN, "--max-steps", "8", *DIVERGING
    )
    assert code == 1
    line = one_error_line(err, "demo")
    assert re.search(r"training stopped at step \d of 8: .*not finite \(loss_label ", line), line
    assert not (out / "model.safetensors").exists()
    # switched off, training goes on and the progress lines show the NaN loss as it is, never 0.0000 (no test
    # split: a NaN student has no confidences to calibrate)
    code, stdout, err = run(capsys, "demo", "--output-dir", str(tmp_path / "on"), *SMALL_RUN, "--max-steps", "8",
                            *DIVERGING, "--stop-on-non-finite", "false", "--synthetic-test-size", "0")  # fmt: skip
    assert code == 0, err
    assert re.search(r"^  step 8/8  loss nan  label nan", stdout, re.MULTILINE), stdout
    assert "loss 0.0000" not in stdout
