"""``hf-cotmi evaluate --test-file NEW`` reads NEW with the column names the training run recorded.

A run trained on your files with ``--input-column question --label-column answer --rationale-column why``
records those names in ``hf_cotmi_config.json``; a new test (or validation) file in the same layout is then
evaluated without repeating the flags, and a column flag given still wins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import one_error_line, run
from conftest import training_arguments

from hf_cotmi.pipeline import (
    SIDECAR_NAME,
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    _data_for_evaluation,
    _load_with_recorded_columns,
    run_training,
)
from hf_cotmi.run_arguments import CLIUsageError

RENAMED = {"input": "question", "label": "answer", "rationale": "why"}


def _write(path: Path, start: int, stop: int, names: dict[str, str]) -> str:
    """JSON Lines of yes/no questions, their columns named ``names[input]``, ``names[label]``, ...."""
    rows = [
        {
            names["input"]: f"q {i} ?",
            names["label"]: "yes" if i % 2 else "no",
            names["rationale"]: f"because {i}",
        }
        for i in range(start, stop)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def renamed_run(tiny_student_dir, tmp_path_factory) -> Path:
    """A one-step run on files whose columns are question, answer and why."""
    folder = tmp_path_factory.mktemp("renamed-columns")
    out = folder / "out"
    run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(
            train_file=_write(folder / "train.jsonl", 0, 8, RENAMED),
            test_file=_write(folder / "test.jsonl", 8, 12, RENAMED),
            input_column="question",
            label_column="answer",
            rationale_column="why",
        ),
        EvaluationArguments(num_examples_to_show=0),
        training_arguments(out, max_steps=1),
        print_fn=lambda text: None,
    )
    return out


def _evaluate(capsys, out: Path, tmp_path: Path, *flags: str) -> tuple[int, str, str, dict]:
    metrics = tmp_path / "metrics.json"
    metrics.unlink(missing_ok=True)
    code, stdout, err = run(
        capsys, "evaluate", "--model", str(out), "--plot-file", str(tmp_path / "d.png"),
        "--output-file", str(metrics), *flags,
    )  # fmt: skip
    return code, stdout, err, json.loads(metrics.read_text()) if metrics.is_file() else {}


def test_the_run_records_its_column_names(renamed_run):
    data = json.loads((renamed_run / SIDECAR_NAME).read_text())["data"]
    assert (data["input_column"], data["label_column"], data["rationale_column"]) == (
        "question",
        "answer",
        "why",
    )


@pytest.mark.parametrize("flag,split", [("--test-file", "test"), ("--validation-file", "valid")])
def test_a_new_file_is_read_with_the_recorded_column_names(renamed_run, tmp_path, capsys, flag, split):
    new = _write(tmp_path / "new.jsonl", 20, 23, RENAMED)
    code, stdout, err, report = _evaluate(capsys, renamed_run, tmp_path, flag, new, "--split", split)
    assert code == 0, err
    assert report["num_examples"] == 3 and report["split"] == split and report["dataset"] is None
    assert stdout.startswith(f"your files {split} (3 examples, ")


def test_a_column_flag_given_wins_over_the_recorded_name(renamed_run, tmp_path, capsys):
    other = {"input": "q", "label": "a", "rationale": "r"}
    new = _write(tmp_path / "other.jsonl", 20, 25, other)
    code, _, err, report = _evaluate(
        capsys, renamed_run, tmp_path, "--test-file", new,
        "--input-column", "q", "--label-column", "a", "--rationale-column", "r",
    )  # fmt: skip
    assert code == 0 and report["num_examples"] == 5, err
    # one flag given, the other two recorded names still apply
    mixed = _write(tmp_path / "mixed.jsonl", 20, 22, {**RENAMED, "input": "q"})
    code, _, err, report = _evaluate(
        capsys, renamed_run, tmp_path, "--test-file", mixed, "--input-column", "q"
    )
    assert code == 0 and report["num_examples"] == 2, err


def test_a_column_flag_given_with_the_default_name_wins_too(renamed_run, tmp_path, capsys):
    # a file in the default layout: `--input-column input` is a flag given, not the default left alone
    plain = _write(
        tmp_path / "plain.jsonl", 20, 24, {"input": "input", "label": "label", "rationale": "rationale"}
    )
    code, _, err, report = _evaluate(
        capsys, renamed_run, tmp_path, "--test-file", plain,
        "--input-column", "input", "--label-column", "label", "--rationale-column", "rationale",
    )  # fmt: skip
    assert code == 0 and report["num_examples"] == 4, err


def test_a_new_file_without_the_recorded_columns_says_where_the_names_came_from(
    renamed_run, tmp_path, capsys
):
    plain = _write(
        tmp_path / "plain.jsonl", 20, 24, {"input": "input", "label": "label", "rationale": "rationale"}
    )
    code, stdout, err, _ = _evaluate(capsys, renamed_run, tmp_path, "--test-file", plain)
    line = one_error_line(err, "evaluate")
    assert code == 2 and not stdout
    assert "no column 'question'" in line and SIDECAR_NAME in line and "--input-column" in line


def test_the_recorded_names_are_told_by_the_errors_class_not_its_wording(
    renamed_run, tmp_path, capsys, monkeypatch
):
    """Reworded so that it names no column, the loader's missing-column error still gets the note."""
    from hf_cotmi.data.custom import MissingColumnError

    monkeypatch.setattr(MissingColumnError, "__str__", lambda error: "a column is absent")
    plain = _write(
        tmp_path / "plain.jsonl", 20, 24, {"input": "input", "label": "label", "rationale": "rationale"}
    )
    code, _, err, _ = _evaluate(capsys, renamed_run, tmp_path, "--test-file", plain)
    line = one_error_line(err, "evaluate")
    assert code == 2
    assert line.startswith("hf-cotmi evaluate: error: a column is absent (evaluate used the column names ")
    assert line.endswith("--input-column question, --label-column answer, --rationale-column why)")


def test_the_note_names_only_the_recorded_names_that_are_not_the_defaults(tmp_path):
    """A run that renamed only its input column records the default label and rationale names too; the note
    names the renamed one alone, and a default name missing from the file gets no note (no news)."""
    recorded = {"input_column": "question", "label_column": "label", "rationale_column": "rationale"}
    defaults = {"input": "input", "label": "label", "rationale": "rationale"}
    for names, missing, note in [
        (defaults, "question", " (evaluate used the column names the training run recorded in "),
        ({**defaults, "input": "question", "rationale": "why"}, "rationale", None),
    ]:
        test = _write(tmp_path / "test.jsonl", 0, 3, names)
        args = DataArguments(test_file=test, train_split="", eval_split="", **recorded)
        with pytest.raises(CLIUsageError) as info:
            _load_with_recorded_columns(args, recorded, "run-folder")
        message = str(info.value)
        assert message.startswith(f"{test}: no column {missing!r}")
        if note is None:
            assert "recorded" not in message and SIDECAR_NAME not in message
        else:
            assert message.endswith(f"{note}{SIDECAR_NAME} of 'run-folder': --input-column question)")


def test_a_column_flag_given_naming_no_column_gets_no_note_about_recorded_names(
    renamed_run, tmp_path, capsys
):
    plain = _write(
        tmp_path / "plain.jsonl", 20, 24, {"input": "input", "label": "label", "rationale": "rationale"}
    )
    code, _, err, _ = _evaluate(capsys, renamed_run, tmp_path, "--test-file", plain, "--input-column", "nope")
    line = one_error_line(err, "evaluate")
    assert code == 2 and "no column 'nope' (for 'input')" in line
    assert SIDECAR_NAME not in line and "recorded" not in line


def test_a_recorded_dataset_carries_no_column_names(tmp_path):
    plain = _write(
        tmp_path / "plain.jsonl", 0, 3, {"input": "input", "label": "label", "rationale": "rationale"}
    )
    sidecar = {"data": {"dataset": "synthetic", "synthetic_test_size": 4}}
    data, from_sidecar = _data_for_evaluation(DataArguments(test_file=plain), sidecar, str(tmp_path), "test")
    assert data.splits["test"]["input"] == ["q 0 ?", "q 1 ?", "q 2 ?"] and not from_sidecar
