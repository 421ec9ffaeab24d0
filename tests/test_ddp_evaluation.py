"""Two CPU processes (torchrun, gloo) evaluate 15 examples as one process does: the accuracy of
``build_compute_metrics`` and the ECE, accuracy and average confidence of ``ECECallback`` count every example
exactly once (not the example the sampler repeats to fill the last batch, not each process's share alone),
and only the main process draws the reliability diagram."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from test_ddp import _run, _torchrun

from hf_cotmi.metrics import normalize_text
from hf_cotmi.teacher.serve import free_local_port

SCRIPT = Path(__file__).parent / "scripts" / "ddp_evaluate.py"
EXAMPLES = 15
N_BINS = 5  # as the script's ECECallback


def _evaluate(tmp_path: Path, processes: int, options: tuple[str, ...]) -> list[dict]:
    """Each process's report of ``ddp_evaluate.py``, one process with batch 4 or two with 2 each."""
    folder = tmp_path / f"{processes}-processes"
    if processes == 1:
        command = [sys.executable, str(SCRIPT), str(folder / "out"), str(folder / "report"), "4", *options]
    else:
        command = [_torchrun(), "--nproc_per_node", "2", "--master_port", str(free_local_port()), str(SCRIPT),
                   str(folder / "out"), str(folder / "report"), "2", *options]  # fmt: skip
    _run(command, tmp_path)
    reports = [json.loads((folder / "report" / f"rank{r}.json").read_text()) for r in range(processes)]
    assert [report["world_size"] for report in reports] == [processes] * processes
    written = sorted(str(p.relative_to(folder / "out")) for p in (folder / "out").rglob("*") if p.is_file())
    assert written == ["reliability_diagrams/eval_step0.png"], written
    return reports


def _accuracy(predictions: list[str], references: list[str]) -> float:
    """Normalised exact match; an empty reference is never matched."""
    pairs = [(normalize_text(p), normalize_text(r)) for p, r in zip(predictions, references, strict=True)]
    return sum(r != "" and p == r for p, r in pairs) / len(pairs)


def _uniform_ece(confidences: list[float], correct: list[bool]) -> float:
    """Expected calibration error over ``N_BINS`` equal-width bins, bin by bin."""
    total = 0.0
    for b in range(N_BINS):
        members = [i for i, c in enumerate(confidences) if min(int(c * N_BINS), N_BINS - 1) == b]
        if members:
            gap = np.mean([correct[i] for i in members]) - np.mean([confidences[i] for i in members])
            total += len(members) / len(confidences) * abs(gap)
    return total


def _compared_rows(report: dict) -> tuple[list[str], list[str]]:
    """Every reference and prediction ``compute_metrics`` was given, over all its calls, in order."""
    references = [text for call in report["compared"] for text in call["references"]]
    predictions = [text for call in report["compared"] for text in call["predictions"]]
    return references, predictions


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ("--confidence", "sequence"),
        ("--confidence", "first_token", "--no-concat"),
        ("--confidence", "candidates", "--batch-eval-metrics"),
    ],
    ids=["concatenated", "per-batch-arrays", "batch-eval-metrics"],
)
def test_two_processes_evaluate_every_example_once(tmp_path: Path, options: tuple[str, ...]) -> None:
    (single,) = _evaluate(tmp_path, 1, options)
    ranks = _evaluate(tmp_path, 2, options)

    references, predictions = _compared_rows(single)
    assert len(references) == EXAMPLES
    accuracy = _accuracy(predictions, references)
    assert 0 < accuracy < 1  # so a repeated or missing example would change it
    assert single["metrics"]["eval_accuracy"] == pytest.approx(accuracy)
    if "--batch-eval-metrics" in options:  # one call per global batch of 4; the last one asks for the result
        assert [call["compute_result"] for call in single["compared"]] == [False, False, False, True]
    else:
        assert [call["compute_result"] for call in single["compared"]] == [None]

    callback_keys = ["eval_ece", "eval_avg_confidence"]
    if "candidates" in options:
        callback_keys.append("eval_choice_accuracy")
    assert single["references"] == references  # the callback scored the same 15 examples
    expected_ece = _uniform_ece(single["confidences"], single["correct"])
    assert single["metrics"]["eval_ece"] == pytest.approx(expected_ece, rel=1e-9, abs=1e-12)
    assert single["metrics"]["eval_avg_confidence"] == pytest.approx(np.mean(single["confidences"]))

    for rank, report in enumerate(ranks):
        assert _compared_rows(report) == (references, predictions), rank
        assert [call["compute_result"] for call in report["compared"]] == [
            call["compute_result"] for call in single["compared"]
        ]
        assert report["metrics"]["eval_accuracy"] == pytest.approx(accuracy), rank
        assert report["references"] == single["references"]
        assert report["predictions"] == single["predictions"]
        assert report["correct"] == single["correct"]
        assert report["confidences"] == pytest.approx(single["confidences"], rel=1e-5, abs=1e-9)
        for key in callback_keys:
            assert math.isclose(report["metrics"][key], single["metrics"][key], rel_tol=1e-5, abs_tol=1e-9), (
                key
            )
    # the diagram is drawn once, by the main process, like the single process's
    drawn = [[Path(path).name for path in report["drawn"]] for report in (single, *ranks)]
    assert drawn == [["eval_step0.png"], ["eval_step0.png"], []]
