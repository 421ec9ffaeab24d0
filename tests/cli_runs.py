"""Running ``hf-cotmi`` commands in-process from tests, and reading their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_cotmi.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``hf_cotmi.cli.main(argv)``: its exit status, standard output and standard error."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, command: str) -> str:
    """The single ``hf-cotmi <command>: error: ...`` line a usage or data error prints, without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hf-cotmi {command}: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


def evaluate_reproduces_the_runs_test_figures(capsys, model_dir: str, tmp_path: Path) -> None:
    """``hf-cotmi evaluate --model DIR`` on the run's recorded data gives the accuracy, ECE and average
    confidence the training run wrote to its ``results.json``."""
    output = tmp_path / "metrics.json"
    code, _, err = run(capsys, "evaluate", "--model", model_dir, "--output-file", str(output))
    assert code == 0, err
    report = json.loads(output.read_text())
    metrics = json.loads(Path(model_dir, "results.json").read_text())["metrics"]
    for key in ("accuracy", "ece", "avg_confidence"):
        assert report[key] == pytest.approx(metrics[f"test_{key}"], abs=1e-6), key
