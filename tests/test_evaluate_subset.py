"""``evaluate`` on the data a run recorded evaluates the subset the run's test phase evaluated.

A run trained with ``--max-test-samples N`` wrote its test figures for the first N test examples;
``hf-cotmi evaluate --model OUT`` without data options must reproduce them, not evaluate the whole split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import evaluate_reproduces_the_runs_test_figures, run
from conftest import training_arguments

from hf_cotmi.pipeline import (
    SIDECAR_NAME,
    DataArguments,
    EvaluationArguments,
    ModelArguments,
    run_evaluation,
    run_training,
)

TEST_ROWS, TESTED = 7, 3


def _write_rows(path: Path, start: int, stop: int) -> str:
    rows = [
        {"input": f"how many {i} ?", "label": str(i % 4), "rationale": f"the answer is {i % 4}"}
        for i in range(start, stop)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def subset_run(tiny_student_dir, tmp_path_factory) -> Path:
    """A run whose test phase evaluated the first TESTED of TEST_ROWS test examples (and 2 of 4 valid)."""
    folder = tmp_path_factory.mktemp("subset-run")
    out = folder / "out"
    run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(
            train_file=_write_rows(folder / "train.jsonl", 0, 8),
            validation_file=_write_rows(folder / "valid.jsonl", 20, 24),
            test_file=_write_rows(folder / "test.jsonl", 8, 8 + TEST_ROWS),
            max_test_samples=TESTED,
            max_eval_samples=2,
        ),
        EvaluationArguments(num_examples_to_show=0),
        training_arguments(out, max_steps=1),
        print_fn=lambda text: None,
    )
    return out


def test_evaluate_reproduces_the_figures_of_a_run_tested_on_a_subset(subset_run, tmp_path, capsys):
    evaluate_reproduces_the_runs_test_figures(capsys, str(subset_run), tmp_path)
    code, stdout, err = run(capsys, "evaluate", "--model", str(subset_run))
    assert code == 0, err
    assert f"test ({TESTED} examples" in stdout
    assert f"the first {TESTED} examples of {TEST_ROWS}, as the training run evaluated them" in stdout


def test_the_recorded_limit_belongs_to_its_split_and_a_flag_wins(subset_run, tmp_path):
    sidecar = json.loads((subset_run / SIDECAR_NAME).read_text())
    assert sidecar["held_out_max_samples"] == {"test": TESTED, "valid": 2}
    plot = str(tmp_path / "d.png")
    valid = run_evaluation(
        str(subset_run), DataArguments(), EvaluationArguments(), split="valid", plot_file=plot
    )
    assert valid["num_examples"] == 2
    whole = run_evaluation(
        str(subset_run), DataArguments(max_test_samples=100), EvaluationArguments(), plot_file=plot
    )
    assert whole["num_examples"] == TEST_ROWS and "run_max_samples" not in whole


def test_other_synthetic_data_is_evaluated_whole_not_cut_to_the_runs_count(tiny_student_dir, tmp_path):
    """``--smoke`` records a cut of 20; ``evaluate --synthetic-test-size 50`` asks for 50 other examples."""
    out = tmp_path / "out"
    run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(dataset="synthetic", synthetic_train_size=8, synthetic_test_size=6, max_test_samples=3),
        EvaluationArguments(num_examples_to_show=0),
        training_arguments(out, max_steps=1),
        print_fn=lambda text: None,
    )
    plot = str(tmp_path / "d.png")
    recorded = run_evaluation(str(out), DataArguments(), EvaluationArguments(), plot_file=plot)
    assert recorded["num_examples"] == 3 and recorded["run_max_samples"] == 3
    other = run_evaluation(
        str(out), DataArguments(synthetic_test_size=5), EvaluationArguments(), plot_file=plot
    )
    assert other["num_examples"] == 5 and "run_max_samples" not in other
    reseeded = run_evaluation(
        str(out), DataArguments(synthetic_seed=7), EvaluationArguments(), plot_file=plot
    )
    assert reseeded["num_examples"] == 6 and "run_max_samples" not in reseeded


def test_a_recorded_limit_that_covered_the_whole_split_offers_no_more(tiny_student_dir, tmp_path, capsys):
    """``demo --smoke`` cuts its 20 test examples to the first 20: ``evaluate`` said "the first 20 examples
    ...; --max-test-samples N evaluates more", and there were no more."""
    out = tmp_path / "out"
    run_training(
        ModelArguments(model_name_or_path=tiny_student_dir),
        DataArguments(dataset="synthetic", synthetic_train_size=8, synthetic_test_size=4, max_test_samples=4),
        EvaluationArguments(num_examples_to_show=0),
        training_arguments(out, max_steps=1),
        print_fn=lambda text: None,
    )
    assert json.loads((out / SIDECAR_NAME).read_text())["held_out_max_samples"] == {"test": 4}
    code, stdout, err = run(capsys, "evaluate", "--model", str(out), "--plot-file", str(tmp_path / "d.png"))
    assert code == 0, err
    assert "test (4 examples" in stdout
    assert "the first" not in stdout and "--max-test-samples" not in stdout
