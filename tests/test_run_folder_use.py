"""What users do with a finished run folder: ``evaluate`` and ``predict`` read its ``hf_cotmi_config.json``.

A sidecar that is damaged (not JSON, or JSON that is not an object) is named in a one-line error rather than
surfacing as a bare ``JSONDecodeError`` or being taken for no sidecar at all; ``predict --input-file`` reads
JSON Lines in the layout the run was trained on (its recorded ``--input-column``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cli_runs import one_error_line, run
from test_cli_recorded_columns import RENAMED, _write, renamed_run  # noqa: F401 (a fixture)

from hf_cotmi.pipeline import SIDECAR_NAME, read_sidecar


@pytest.fixture
def student_copy(tiny_student_dir, tmp_path) -> Path:
    """A writable copy of the shared tiny student folder."""
    folder = tmp_path / "student"
    shutil.copytree(tiny_student_dir, folder)
    return folder


@pytest.mark.parametrize(
    "text, problem",
    [('{"dataset": "synthetic', "is not valid JSON"), ("[1, 2]", "holds a list")],
    ids=["truncated", "array"],
)
def test_a_damaged_sidecar_is_named_by_evaluate_and_predict(student_copy, capsys, text, problem):
    (student_copy / SIDECAR_NAME).write_text(text)
    for command in (
        ["evaluate", "--model", str(student_copy)],
        ["predict", "--model", str(student_copy), "tom has 3 apples"],
    ):
        code, _, err = run(capsys, *command)
        line = one_error_line(err, command[0])
        assert code == 2, err
        assert str(student_copy / SIDECAR_NAME) in line and problem in line, line
        assert "JSONDecodeError" not in line and "has no" not in line


def test_read_sidecar_still_reads_a_good_one_and_none(student_copy):
    assert read_sidecar(str(student_copy)) == {}
    (student_copy / SIDECAR_NAME).write_text(json.dumps({"task": "text", "future_key": [1]}))
    assert read_sidecar(str(student_copy)) == {"task": "text", "future_key": [1]}


def test_predict_reads_an_input_file_in_the_runs_own_column_layout(renamed_run, tmp_path, capsys):  # noqa: F811
    questions = _write(tmp_path / "new.jsonl", 20, 23, RENAMED)  # "question", "answer", "why" columns
    code, stdout, err = run(
        capsys, "predict", "--model", str(renamed_run), "--jsonl", "--input-file", questions
    )
    assert code == 0, err
    from_file = [json.loads(line) for line in stdout.splitlines()]
    texts = [json.loads(line)["question"] for line in Path(questions).read_text().splitlines()]
    code, stdout, err = run(capsys, "predict", "--model", str(renamed_run), "--jsonl", *texts)
    assert code == 0, err
    from_arguments = [json.loads(line) for line in stdout.splitlines()]
    assert [row["input"] for row in from_file] == texts
    for got, expected in zip(from_file, from_arguments):
        assert (got["label"], got["rationale"]) == (expected["label"], expected["rationale"])
        assert got["confidence"] == pytest.approx(expected["confidence"], rel=1e-5)


def test_predict_still_reads_the_input_field_of_a_run_with_renamed_columns(renamed_run, tmp_path, capsys):  # noqa: F811
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"input": "q 30 ?"}) + "\n")
    code, stdout, err = run(
        capsys, "predict", "--model", str(renamed_run), "--jsonl", "--input-file", str(plain)
    )
    assert code == 0, err
    assert json.loads(stdout)["input"] == "q 30 ?"


def test_an_input_file_without_the_runs_column_names_it(renamed_run, tmp_path, capsys):  # noqa: F811
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "q 30 ?"}) + "\n")
    code, _, err = run(capsys, "predict", "--model", str(renamed_run), "--input-file", str(other))
    line = one_error_line(err, "predict")
    assert code == 2 and "'question'" in line and "'input'" in line and "line 1" in line, line


# ------------------------------------------------------------------ the model card's usage snippet

SHORT_INPUTS = [
    "--dataset", "synthetic", "--synthetic-train-size", "8", "--synthetic-test-size", "2",
    "--max-input-length", "9", "--generation-max-length", "4", "--rationale-max-new-tokens", "6",
    "--tiny-d-model", "16", "--tiny-num-layers", "1", "--tiny-num-heads", "2", "--tiny-d-ff", "32",
    "--max-steps", "1", "--per-device-train-batch-size", "4", "--learning-rate", "5e-3",
    "--save-strategy", "no", "--use-cpu", "--disable-tqdm", "true", "--report-to", "none",
    "--num-examples-to-show", "0",
]  # fmt: skip


def _snippet_prints(folder: Path) -> tuple[str, str]:
    """Run the card's usage snippet against ``folder`` (its Hub id replaced by the path): its answer and
    rationale."""
    import contextlib
    import io
    import re

    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    code = re.sub(r'from_pretrained\("[^"]*"\)', f"from_pretrained({str(folder)!r})", code)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "card", "exec"), {})
    lines = dict(line.split(": ", 1) for line in printed.getvalue().splitlines() if ": " in line)
    return lines.get("answer", "").strip(), lines.get("rationale", "").strip()


@pytest.mark.parametrize("student_type", ["seq2seq", "causal"])
def test_the_cards_snippet_cuts_a_long_input_as_training_and_predict_do(tmp_path, capsys, student_type):
    """The run's inputs were cut to --max-input-length 9 tokens (the snippet's own question, a test input, is
    longer): the snippet must prompt with the cut input too, or it answers something the run never saw."""
    from test_model_card_run_details import snippet_question

    from hf_cotmi.pipeline import run_prediction

    out = tmp_path / "out"
    code, _, err = run(
        capsys, "train", *SHORT_INPUTS, "--student-type", student_type, "--output-dir", str(out)
    )
    assert code == 0, err
    question = snippet_question((out / "README.md").read_text())
    row = run_prediction(str(out), [question], device="cpu")[0]
    assert _snippet_prints(out) == (row["label"], row["rationale"])


def test_a_recorded_data_dir_missing_here_names_the_sidecar_and_the_fix(student_copy, tmp_path, capsys):
    gone = str(tmp_path / "home" / "alice" / "dss")  # the training machine's folder, absent here
    (student_copy / SIDECAR_NAME).write_text(json.dumps({"data": {"dataset": "svamp", "data_dir": gone}}))
    code, _, err = run(capsys, "evaluate", "--model", str(student_copy))
    line = one_error_line(err, "evaluate")
    assert code == 2, err
    assert f"{SIDECAR_NAME} in {str(student_copy)!r} records data_dir {gone!r}" in line, line
    assert "--dataset svamp" in line and "--data-dir" in line and "--test-file" in line, line
    # a --data-dir given wins over the recorded one: its own error, which does not blame the sidecar
    other = str(tmp_path / "elsewhere")
    code, _, err = run(capsys, "evaluate", "--model", str(student_copy), "--data-dir", other)
    line = one_error_line(err, "evaluate")
    assert code != 0 and repr(other) in line and SIDECAR_NAME not in line and gone not in line, line


def test_a_recorded_data_dir_of_a_hub_repository_names_the_repository(tmp_path, monkeypatch):
    from hf_cotmi.pipeline import CLIUsageError, DataArguments, _data_for_evaluation

    monkeypatch.chdir(tmp_path)  # "me/run" is no folder here: a Hub repository id
    sidecar = {"data": {"dataset": "svamp", "data_dir": "/home/alice/no-such-dss"}}
    with pytest.raises(CLIUsageError) as caught:
        _data_for_evaluation(DataArguments(), sidecar, "me/run", "test")
    message = str(caught.value)
    source = f"the {SIDECAR_NAME} of the Hub repository 'me/run'"
    assert f"{source} records data_dir '/home/alice/no-such-dss'" in message, message
    assert "--data-dir" in message and "--test-file" in message
    # a recorded test file missing here is named the same way
    sidecar = {"data": {"test_file": "/home/alice/test.jsonl"}}
    with pytest.raises(CLIUsageError, match=re.escape(f"{source} records '/home/alice/test.jsonl' as the")):
        _data_for_evaluation(DataArguments(), sidecar, "me/run", "test")
