"""``--label-candidates`` on your own files: a column name that is not there, and a column of the wrong type,
are refused before training, with the file and record named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import run

from hf_cotmi.tasks import get_task

ROWS = [{"input": f"{i} + 1 ?", "label": str(i + 1), "rationale": f"{i} + 1 = {i + 1} ."} for i in range(4)]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_single_label_that_is_no_column_is_refused():
    # "choice" for the column "choices": read as the one label "choice", every confidence was 1.0 and no
    # candidate ever right, without a word
    with pytest.raises(ValueError) as caught:
        get_task("synthetic").resolve_confidence(candidates="choice", columns=["input", "label", "choices"])
    message = str(caught.value)
    assert "--label-candidates 'choice' is not a column" in message
    assert "['input', 'label', 'choices']" in message


def test_two_labels_or_a_column_are_still_accepted():
    synthetic = get_task("synthetic")
    assert synthetic.resolve_confidence(candidates="yes,no", columns=["input"]) == (
        "candidates",
        ["yes", "no"],
    )
    assert synthetic.resolve_confidence(candidates="choices", columns=["choices"]) == (
        "candidates",
        "choices",
    )


@pytest.mark.parametrize(
    ("choices", "row", "shown"),
    [
        (["1,0", "2,0", "3,0", "4,0"], 0, "'1,0' (text)"),  # comma-separated texts, not lists
        ([["1"], ["2"], [], ["4"]], 2, "[] (an empty list)"),
        ([["1"], ["2"], None, ["4"]], 2, "None (null)"),
        ([["1"], ["2"], ["3", None], ["4"]], 2, "['3', None] (a list holding null)"),  # the candidate "None"
        ([{"a": "1"}, {"a": "2"}, {"a": "3"}, {"a": "4"}], 0, "{'a': '1'} (an object)"),  # its keys
    ],
)
def test_a_candidates_column_of_the_wrong_type_is_refused_before_training(
    tmp_path, capsys, choices, row, shown
):
    train = jsonl(tmp_path / "train.jsonl", ROWS)
    test = jsonl(tmp_path / "test.jsonl", [dict(r, choices=c) for r, c in zip(ROWS, choices)])
    out = tmp_path / "out"
    argv = ["--train-file", str(train), "--test-file", str(test), "--label-candidates", "choices"]
    code, _, err = run(capsys, "demo", "--smoke", *argv, "--output-dir", str(out))
    assert code != 0
    assert (
        f"--test-file {test}, row {row} (counting from 0): 'choices' is {shown}; expected a non-empty list"
        in err
    )
    assert "Traceback" not in err
    assert not (out / "train_results.json").exists()  # refused before training, not after it


def test_a_well_formed_candidates_column_passes_the_check():
    from datasets import Dataset

    from hf_cotmi.pipeline import _check_candidate_lists

    _check_candidate_lists({"test": Dataset.from_dict({"choices": [["a", "b"], ["c"]]})}, "choices", {})


def test_evaluate_refuses_a_candidates_column_of_the_wrong_type_naming_the_file(tmp_path, capsys):
    train = jsonl(tmp_path / "train.jsonl", ROWS)
    good = jsonl(tmp_path / "good.jsonl", [dict(r, choices=[r["label"], "0"]) for r in ROWS])
    out = tmp_path / "out"
    argv = ["--train-file", str(train), "--test-file", str(good), "--label-candidates", "choices"]
    code, _, err = run(capsys, "demo", "--smoke", *argv, "--output-dir", str(out))
    assert code == 0, err
    bad = jsonl(tmp_path / "bad.jsonl", [dict(r, choices=["x", None]) for r in ROWS])
    code, _, err = run(
        capsys, "evaluate", "--model", str(out), "--test-file", str(bad), "--label-candidates", "choices"
    )
    assert code != 0
    assert (
        f"--test-file {bad}, row 0 (counting from 0): 'choices' is ['x', None] (a list holding null)" in err
    )
