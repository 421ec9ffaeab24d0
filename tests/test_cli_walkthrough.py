"""What a new user meets walking through the docs with the ``hf-cotmi`` command: progress that is printed
once, errors that name the flag to change, a run that says what it did not do, a Ctrl-C that says how to
go on. Each case runs through ``hf_cotmi.cli.main`` with the built-in tiny students (a few seconds each).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_runs import one_error_line, run

from hf_cotmi.run_arguments import plural

TINY = [
    "--tiny-d-model", "16", "--tiny-num-layers", "1", "--tiny-num-heads", "2", "--tiny-d-ff", "32",
    "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "4", "--use-cpu",
    "--report-to", "none", "--generation-max-length", "4", "--rationale-max-new-tokens", "4",
    "--num-examples-to-show", "0",
]  # fmt: skip


def interrupted_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("hf-cotmi train: interrupted")]
    assert len(lines) == 1, err
    return lines[0]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def custom_rows(count: int) -> list[dict]:
    """Records with the own-data guide's column names."""
    return [
        {
            "question": f"tom has {i % 9} apples . how many ?",
            "answer": str(i % 9),
            "explanation": f"{i % 9} .",
        }
        for i in range(count)
    ]


CUSTOM_COLUMNS = [
    "--input-column",
    "question",
    "--label-column",
    "answer",
    "--rationale-column",
    "explanation",
]


# ------------------------------------------------------------------------------------------- train output


def test_plural_leaves_the_s_off_for_a_count_of_one_only():
    counts = [plural(count, "step") for count in (0, 1, 2, 11)]
    assert counts == ["0 steps", "1 step", "2 steps", "11 steps"]
    assert plural(1, "valid example") == "1 valid example" and plural(3, "record") == "3 records"


def test_train_with_progress_bars_prints_each_logging_step_and_evaluation_once(tmp_path, capsys):
    code, out, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-valid-size", "4",
        "--synthetic-test-size", "4", "--max-steps", "2", "--logging-steps", "1", "--eval-strategy", "steps",
        "--eval-steps", "2", "--save-strategy", "no", *TINY, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert "\ntraining: 2 steps, batch 4, " in out, out
    assert re.findall(r"^  step (\d)/2  loss ", out, flags=re.MULTILINE) == ["1", "2"], out
    assert len(re.findall(r"^  eval at step 2: ", out, flags=re.MULTILINE)) == 1, out
    # the progress bar's copy of the same logs, as a Python dict, is not printed as well
    assert not re.search(r"^\{'", out, flags=re.MULTILINE), out
    assert "'loss_label'" not in out and "'eval_loss'" not in out


def final_result_lines(out: str) -> list[str]:
    """The summary lines of the final evaluation (``<split>: accuracy ...``)."""
    return re.findall(r"^(\w+): accuracy [0-9.]+% ", out, flags=re.MULTILINE)


@pytest.mark.parametrize("evaluation", [[], ["--eval-strategy", "steps", "--eval-steps", "2"]])
def test_a_validation_split_without_a_test_split_is_reported_once_under_its_name(
    evaluation, tmp_path, capsys
):
    code, out, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-valid-size", "4",
        "--synthetic-test-size", "0", "--max-steps", "2", "--logging-steps", "1", "--save-strategy", "no",
        "--disable-tqdm", *evaluation, *TINY, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert "data: synthetic-arithmetic-cot (train 16, eval 4 examples" in out
    # the final evaluation is not printed as a progress line as well: only the one during training is
    expected = 1 if evaluation else 0
    assert len(re.findall(r"^  eval at step \d: ", out, flags=re.MULTILINE)) == expected, out
    assert "evaluating on 4 valid examples ..." in out
    assert final_result_lines(out) == ["valid"], out
    # results.json keeps the metric keys of the trainer's evaluation
    assert "eval_accuracy" in json.loads((tmp_path / "out" / "results.json").read_text())["metrics"]


def test_the_final_evaluation_is_named_by_the_test_split_it_measured(tmp_path, capsys):
    code, out, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-valid-size", "4",
        "--synthetic-test-size", "4", "--test-split", "valid", "--max-steps", "1", "--save-strategy", "no",
        "--disable-tqdm", *TINY, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert "\ntraining: 1 step, batch 4, " in out, out  # not "1 steps"
    assert "evaluating on 4 valid examples ..." in out
    assert final_result_lines(out) == ["valid"], out


def test_train_without_a_test_or_validation_split_says_nothing_was_evaluated(tmp_path, capsys):
    train = write_rows(tmp_path / "train.jsonl", custom_rows(8))
    code, out, err = run(
        capsys, "train", "--train-file", str(train), *CUSTOM_COLUMNS, "--max-steps", "1", "--save-strategy",
        "no", "--disable-tqdm", *TINY, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert "not evaluated: the data has no test or validation split (--test-file, --validation-file)" in out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["metrics"] == {}


def test_an_interrupted_train_says_how_to_resume_from_its_newest_checkpoint(tmp_path, capsys, monkeypatch):
    from hf_cotmi.trainer import DSSMITrainer

    trained = DSSMITrainer.train

    def train_then_ctrl_c(self, *args, **kwargs):
        trained(self, *args, **kwargs)  # saves checkpoint-2
        raise KeyboardInterrupt

    monkeypatch.setattr(DSSMITrainer, "train", train_then_ctrl_c)
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-test-size", "4",
        "--max-steps", "2", "--save-strategy", "steps", "--save-steps", "2", "--disable-tqdm", *TINY,
        "--output-dir", str(out_dir),
    )  # fmt: skip
    assert code == 130
    line = interrupted_line(err)
    assert f"the newest complete checkpoint is {out_dir / 'checkpoint-2'}" in line
    assert "--resume_from_checkpoint latest" in line


def test_an_interrupt_before_any_checkpoint_says_a_rerun_starts_over(tmp_path, capsys, monkeypatch):
    from hf_cotmi.trainer import DSSMITrainer

    def ctrl_c(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DSSMITrainer, "train", ctrl_c)
    code, _, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-test-size", "4",
        "--max-steps", "2", "--disable-tqdm", *TINY, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 130
    assert interrupted_line(err) == (
        "hf-cotmi train: interrupted; no complete checkpoint was saved yet, so a rerun starts from step 0"
    )


# ---------------------------------------------------------------------------------- own-data mistakes


@pytest.mark.parametrize(
    "column,flag",
    [("input", "--input-column"), ("label", "--label-column"), ("rationale", "--rationale-column")],
)
def test_a_missing_column_names_the_flag_that_picks_it(tmp_path, capsys, column, flag):
    rows = [{key: value for key, value in row.items() if key != {"input": "question", "label": "answer",
             "rationale": "explanation"}[column]} for row in custom_rows(4)]  # fmt: skip
    train = write_rows(tmp_path / "train.jsonl", rows)
    code, _, err = run(
        capsys, "train", "--train-file", str(train), *CUSTOM_COLUMNS, "--max-steps", "1", *TINY,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2  # a usage error: the flag names the column, and a flag fixes it
    line = one_error_line(err, "train")
    assert f"no column {dict(input='question', label='answer', rationale='explanation')[column]!r}" in line
    assert f"{column}_column= ({flag} on the command line)" in line


def test_a_column_flag_naming_no_column_of_the_file_is_a_usage_error(tmp_path, capsys):
    """The docs' walk: ``--input-column question`` on files whose input column is ``input``."""
    train = write_rows(tmp_path / "train.jsonl", [{"input": "q ?", "label": "1", "rationale": "r ."}] * 4)
    code, _, err = run(
        capsys, "train", "--train-file", str(train), "--input-column", "question", "--max-steps", "1", *TINY,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    line = one_error_line(err, "train")
    assert (
        "train.jsonl: no column 'question' (for 'input'); the columns are ['input', 'label', 'rationale']"
        in line
    )
    assert "ValueError" not in line


def test_a_missing_column_is_a_usage_error_by_its_class_not_its_wording(tmp_path, capsys, monkeypatch):
    """The CLI knows the loader's missing-column error by its class: reworded, it is still a usage error."""
    from hf_cotmi.data.custom import MissingColumnError

    monkeypatch.setattr(MissingColumnError, "__str__", lambda error: f"{error.where} lacks {error.column}")
    train = write_rows(tmp_path / "train.jsonl", [{"input": "q ?", "label": "1", "rationale": "r ."}] * 4)
    code, _, err = run(
        capsys, "train", "--train-file", str(train), "--input-column", "question", "--max-steps", "1", *TINY,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert one_error_line(err, "train") == f"hf-cotmi train: error: {train} lacks question"


def test_evaluate_a_model_folder_that_does_not_exist_says_so(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    code, _, err = run(capsys, "evaluate", "--model", str(missing))
    assert code == 2
    line = one_error_line(err, "evaluate")
    assert f"--model {str(missing)!r} is not a local folder" in line
    assert "--dataset or --test-file" in line


def test_evaluate_a_split_the_run_has_no_file_for_names_the_ones_it_has(tmp_path, capsys):
    train = write_rows(tmp_path / "train.jsonl", custom_rows(8))
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "train", "--train-file", str(train), *CUSTOM_COLUMNS, "--max-steps", "1", "--save-strategy",
        "no", "--disable-tqdm", *TINY, "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", "--model", str(out))
    assert code == 2
    line = one_error_line(err, "evaluate")
    assert (
        "the data has no 'test' split (the run recorded files for: train); choose another with --split"
        in line
    )


def test_predict_a_jsonl_without_an_input_field_names_the_fields_it_has(tmp_path, capsys):
    questions = write_rows(tmp_path / "questions.jsonl", custom_rows(2))
    code, _, err = run(capsys, "predict", "--model", str(tmp_path), "--input-file", str(questions))
    assert code == 2
    line = one_error_line(err, "predict")
    expected = "expected a JSON object with a text field 'input'; it has 'question', 'answer', 'explanation'"
    assert f"questions.jsonl, line 1: {expected}" in line


# ------------------------------------------------------------------------------- generate-rationales


@pytest.fixture
def teacher_inputs(tmp_path) -> Path:
    return write_rows(tmp_path / "questions.jsonl", custom_rows(3))


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--teacher-model", "t", "--batch-size", "0"], "argument --batch-size: batch_size=0 must be a positive"),
        (["--teacher-model", "t", "--num-samples", "0"], "argument --num-samples: num_samples=0 must be a positive"),
        (["--teacher-model", "t", "--max-new-tokens", "0"], "argument --max-new-tokens: max_new_tokens=0 must be"),
        (["--teacher-model", "t", "--max-records", "-1"], "argument --max-records: max_records=-1 must be >= 0"),
        (["--teacher-model", "t", "--temperature", "-1"], "argument --temperature: temperature=-1.0 must be >= 0"),
        (["--teacher-model", "t", "--top-p", "0"], "argument --top-p: top_p=0.0 must be in (0, 1]"),
        (["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--concurrency", "0"],
         "argument --concurrency: concurrency=0 must be a positive integer"),
        (["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--max-retries", "-1"],
         "argument --max-retries: max_retries=-1 must be >= 0"),
        (["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--request-timeout", "0"],
         "argument --request-timeout: request_timeout=0.0 must be > 0 seconds"),
        (["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--batch-size", "3"],
         "argument --batch-size: batch_size=3 (--batch-size) is read by a local teacher"),
        (["--teacher-model", "t", "--concurrency", "2"],
         "argument --concurrency: concurrency=2 (--concurrency) is read by a server teacher"),
        (["--teacher-model", "t", "--api", "completions", "--chat-template-file", "t.jinja"],
         "argument --chat-template-file: chat_template_file (--chat-template-file) is used with api='chat' only"),
    ],
)  # fmt: skip
def test_generate_rationales_refuses_bad_values_as_usage_errors_naming_the_flag(
    tmp_path, capsys, teacher_inputs, flags, named
):
    output = tmp_path / "train.jsonl"
    code, out, err = run(
        capsys, "generate-rationales", "--input-file", str(teacher_inputs), "--output-file", str(output),
        "--input-column", "question", *flags,
    )  # fmt: skip
    assert code == 2, err
    line = one_error_line(err, "generate-rationales")
    assert line.startswith(f"hf-cotmi generate-rationales: error: {named}"), line
    assert "ValueError" not in line and out == ""
    assert not output.exists()


@pytest.mark.parametrize("column,flag", [("input", "--input-column"), ("label", "--label-column")])
def test_generate_rationales_missing_column_names_the_flag(tmp_path, capsys, teacher_inputs, column, flag):
    chosen = {
        "input": ["--label-column", "answer"],
        "label": ["--input-column", "question", "--label-column", "gold"],
    }
    code, _, err = run(
        capsys, "generate-rationales", "--input-file", str(teacher_inputs), "--output-file",
        str(tmp_path / "train.jsonl"), "--teacher-model", str(tmp_path / "unused"), *chosen[column],
    )  # fmt: skip
    assert code == 1
    line = one_error_line(err, "generate-rationales")
    assert "the columns are ['question', 'answer', 'explanation']" in line
    assert f"name the right one with {column}_column= ({flag} on the command line)" in line


def test_generate_rationales_with_a_teacher_that_does_not_exist_names_it(tmp_path, capsys, teacher_inputs):
    missing = tmp_path / "no-such-teacher"
    code, _, err = run(
        capsys, "generate-rationales", "--input-file", str(teacher_inputs), "--output-file",
        str(tmp_path / "train.jsonl"), "--input-column", "question", "--teacher-model", str(missing),
    )  # fmt: skip
    assert code == 2
    line = one_error_line(err, "generate-rationales")
    assert f"could not load the teacher tokenizer {str(missing)!r}: it is not a local folder" in line
    assert "OSError" not in line


def test_a_fresh_run_into_a_folder_with_an_earlier_runs_checkpoints_warns(tmp_path, capsys):
    """Its checkpoints would sit beside the earlier run's, and a later resume could pick one of those."""
    common = (
        "train", "--dataset", "synthetic", "--synthetic-train-size", "8", "--synthetic-valid-size", "2",
        "--synthetic-test-size", "2", "--save-strategy", "steps", "--save-steps", "1", "--disable-tqdm", *TINY,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    code, out, err = run(capsys, *common, "--max-steps", "2")
    assert code == 0, err
    assert "earlier run" not in out
    code, out, err = run(capsys, *common, "--max-steps", "1")
    assert code == 0, err
    assert re.search(
        r"holds checkpoints of an earlier run \(checkpoint-1, checkpoint-2\); this run starts", out
    ), out
    code, out, err = run(capsys, *common, "--max-steps", "2", "--resume_from_checkpoint", "latest")
    assert code == 0, err
    assert "resuming from" in out and "earlier run" not in out


def test_the_learning_rate_note_is_for_a_built_student_at_the_default_rate_only(tmp_path, capsys):
    common = (
        "train", "--dataset", "synthetic", "--synthetic-train-size", "8", "--synthetic-valid-size", "0",
        "--synthetic-test-size", "0", "--max-steps", "1", "--save-strategy", "no", "--disable-tqdm", *TINY,
    )  # fmt: skip
    code, out, err = run(capsys, *common, "--output-dir", str(tmp_path / "a"))
    assert code == 0, err
    assert "note: --learning-rate 5e-05 is the default for a pre-trained student" in out
    code, out, err = run(capsys, *common, "--learning-rate", "5e-3", "--output-dir", str(tmp_path / "b"))
    assert code == 0, err
    assert "note: --learning-rate" not in out


# ----------------------------------------------------------------------------- a second walk through the docs


def test_eval_strategy_without_a_validation_split_is_refused_before_the_student_loads(
    tmp_path, capsys, monkeypatch
):
    """Transformers refused it only when the trainer was built, after the data was tokenised and the model
    loaded, exit 1, in its own words (``args.eval_strategy`` ... ``eval_dataset``)."""
    import hf_cotmi.pipeline

    def loaded(*args, **kwargs):
        raise AssertionError("the student was loaded")

    monkeypatch.setattr(hf_cotmi.pipeline, "load_student", loaded)
    code, _, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "8", "--synthetic-test-size", "2",
        "--eval-strategy", "steps", "--max-steps", "1", *TINY, "--output-dir", str(tmp_path / "synthetic"),
    )  # fmt: skip
    assert code == 2
    line = one_error_line(err, "train")
    assert "--eval-strategy steps evaluates a validation split during training, and the data has none" in line
    assert "--synthetic-valid-size N" in line and "eval_dataset" not in line
    # from a config file, on files of your own: the flag that gives a validation file
    train = write_rows(tmp_path / "train.jsonl", [{"input": "q ?", "label": "1", "rationale": "r ."}] * 4)
    config = tmp_path / "run.yaml"
    config.write_text(f"train_file: {train}\ntest_file: {train}\neval_strategy: steps\neval_steps: 1\n")
    code, _, err = run(capsys, "train", "--config", str(config), *TINY, "--output-dir", str(tmp_path / "own"))
    assert code == 2
    line = one_error_line(err, "train")
    assert "(--eval-split valid): give a validation file with --validation-file" in line
    # a validation file given but another split chosen to evaluate (one with no file, or the training
    # split): the split that evaluates it
    for split, named in [("test", "--eval-split test"), ("train", "--eval-split train, the training split")]:
        code, _, err = run(
            capsys, "train", "--train-file", str(train), "--validation-file", str(train), "--eval-split", split,
            "--eval-strategy", "steps", "--eval-steps", "1", *TINY, "--output-dir", str(tmp_path / "own"),
        )  # fmt: skip
        assert code == 2
        line = one_error_line(err, "train")
        assert f"({named}): --eval-split valid evaluates the file --validation-file gives, or leave" in line
        assert "give a validation file" not in line


def test_the_training_line_shows_the_batch_that_gradient_accumulation_adds_up_to(tmp_path, capsys):
    code, out, err = run(
        capsys, "train", "--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-test-size", "2",
        "--max-steps", "1", "--gradient-accumulation-steps", "3", "--save-strategy", "no", "--disable-tqdm",
        *TINY, "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert "\ntraining: 1 step, batch 4 x 3 accumulation = 12, lr " in out, out


def test_disable_tqdm_hides_the_libraries_bars_too(tiny_student_dir, tmp_path, capsys):
    """``--disable-tqdm`` left transformers' "Loading weights" and "Writing model shards" and datasets'
    "Tokenising train" bars on standard error."""
    bars = ("Loading weights", "Tokenising train", "Writing model shards")
    common = (
        "train", "--model", tiny_student_dir, "--dataset", "synthetic", "--synthetic-train-size", "8",
        "--synthetic-test-size", "2", "--max-steps", "1", "--save-strategy", "no", *TINY,
    )  # fmt: skip
    code, _, err = run(capsys, *common, "--output-dir", str(tmp_path / "shown"))
    assert code == 0, err
    assert all(bar in err for bar in bars), err
    code, _, err = run(capsys, *common, "--disable-tqdm", "--output-dir", str(tmp_path / "hidden"))
    assert code == 0, err
    assert not any(bar in err for bar in bars), err


def test_the_run_records_a_local_base_model_by_its_absolute_path(
    tiny_student_dir, tmp_path, capsys, monkeypatch
):
    """As ``adapter_config.json`` and the data paths are: ``--model tiny`` typed in another folder would
    read as the Hub's ``tiny``."""
    folder = Path(tiny_student_dir)
    monkeypatch.chdir(folder.parent)
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "train", "--model", folder.name, "--dataset", "synthetic", "--synthetic-train-size", "8",
        "--synthetic-test-size", "2", "--max-steps", "1", "--save-strategy", "no", "--disable-tqdm", *TINY,
        "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    sidecar = json.loads((out / "hf_cotmi_config.json").read_text())
    assert sidecar["base_model"] == str(folder.resolve()) != folder.name


def test_demo_help_gives_the_documented_time_and_the_causal_students_defaults():
    from hf_cotmi.cli import build_parser
    from hf_cotmi.demo import _DURATION as DURATION
    from hf_cotmi.demo import demo_defaults

    help_text = " ".join(build_parser("demo").format_help().split())
    causal = demo_defaults(causal=True)
    assert DURATION in help_text and "two minutes" not in help_text
    said = f"whose defaults are {causal['max_steps']} steps at learning rate {causal['learning_rate']:g}"
    assert f"--student-type causal trains a small decoder-only (Llama) student instead, {said}" in help_text
    assert (causal["max_steps"], causal["learning_rate"]) == (400, 1e-2)  # what docs/cli.md says
    docs = Path(__file__).resolve().parent.parent / "docs"
    assert DURATION in " ".join((docs / "cli.md").read_text().split())
    assert DURATION.split(" on ")[0] in (docs / "index.md").read_text()
