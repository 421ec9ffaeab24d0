"""``--train-split`` / ``--eval-split`` / ``--test-split`` and the ``--max-*-samples`` limits on the real
Distilling Step-by-Step data: a misspelt split name is a usage error, and a limit above a split's size says so."""

from __future__ import annotations

import logging

import pytest
from cli_runs import one_error_line, run
from conftest import DSS_DATA, needs_dss

from hf_cotmi.pipeline import load_task_data
from hf_cotmi.run_arguments import CLIUsageError, DataArguments


@needs_dss("svamp")
@pytest.mark.parametrize("option", ["--test-split", "--eval-split", "--train-split"])
def test_a_misspelt_split_option_is_a_one_line_usage_error_naming_the_choices(capsys, tmp_path, option):
    code, _, err = run(
        capsys, "train", "--dataset", "svamp", "--data-dir", str(DSS_DATA), option, "tset",
        "--max-steps", "1", "--output-dir", str(tmp_path),
    )  # fmt: skip
    line = one_error_line(err, "train")
    assert code == 2
    assert option in line and "'tset'" in line
    assert all(name in line for name in ("train", "valid", "test"))


@needs_dss("svamp")
@pytest.mark.parametrize("field", ["test_split", "eval_split", "train_split"])
def test_load_task_data_refuses_an_unknown_split_name_instead_of_leaving_the_split_out(field):
    args = DataArguments(dataset="svamp", data_dir=str(DSS_DATA), **{field: "validation"})
    with pytest.raises(CLIUsageError, match=r"'validation'.*'train', 'valid', 'test'"):
        load_task_data(args)


@needs_dss("svamp")
def test_a_limit_above_the_split_size_keeps_the_whole_split_and_warns(caplog):
    args = DataArguments(dataset="svamp", data_dir=str(DSS_DATA), max_train_samples=5000, max_test_samples=3)
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        data = load_task_data(args)
    assert (data.splits["train"].num_rows, data.splits["test"].num_rows) == (720, 3)
    warnings = [r.getMessage() for r in caplog.records if "--max-" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "--max-train-samples 5000" in warnings[0] and "720" in warnings[0]


def test_evaluate_names_its_own_split_option_for_an_unknown_split(capsys, tmp_path):
    """``evaluate --split dev`` was refused as "--test-split 'dev'", an option evaluate does not have."""
    out = tmp_path / "run"
    code, _, err = run(capsys, "demo", "--smoke", "--max-steps", "1", "--output-dir", str(out))
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", "--model", str(out), "--split", "dev")
    line = one_error_line(err, "evaluate")
    assert code == 2
    assert "argument --split: invalid choice: 'dev'" in line and "--test-split" not in line
