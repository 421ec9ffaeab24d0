"""Two CPU processes (torchrun, gloo) log the same losses as one process on the same global batch."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hf_cotmi.teacher.serve import free_local_port

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def _run(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _torchrun() -> str:
    found = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if found is None:
        pytest.skip("torchrun is not installed")
    return found


def run_one_and_two_processes(script: Path, tmp_path: Path, *extra: str) -> tuple[dict, dict]:
    """``script`` as one process (batch 4) and as two torchrun processes (2 each); both log_history.json."""
    torchrun = _torchrun()
    _run([sys.executable, str(script), str(tmp_path / "single"), "4"], tmp_path)
    _run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_local_port()), str(script),
         str(tmp_path / "multi"), "2", *extra],
        tmp_path,
    )  # fmt: skip
    single = json.loads((tmp_path / "single" / "log_history.json").read_text())
    multi = json.loads((tmp_path / "multi" / "log_history.json").read_text())
    assert single["world_size"] == 1 and multi["world_size"] == 2
    return single, multi


def assert_same_training_logs(single: dict, multi: dict, keys: tuple[str, ...]) -> None:
    """The three logged training steps agree on every key (relative 1e-5)."""
    single_logs = [e for e in single["log_history"] if "loss" in e]
    multi_logs = [e for e in multi["log_history"] if "loss" in e]
    assert len(single_logs) == len(multi_logs) == 3
    for one, two in zip(single_logs, multi_logs):
        for key in keys:
            assert math.isclose(one[key], two[key], rel_tol=1e-5), (key, one, two)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One single-process run (batch 4) and one two-process torchrun run (2 per process) of the script."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    run_one_and_two_processes(SCRIPT, tmp_path)
    return tmp_path


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(runs: Path) -> None:
    single = json.loads((runs / "single" / "log_history.json").read_text())
    multi = json.loads((runs / "multi" / "log_history.json").read_text())
    assert single["world_size"] == 1 and multi["world_size"] == 2
    assert_same_training_logs(single, multi, ("loss", "loss_label", "loss_rationale", "loss_mi"))


@pytest.mark.slow
def test_ece_callback_shares_the_evaluation_between_processes(runs: Path) -> None:
    """Each of two processes scores its half of the evaluation set; both report the single-process ECE."""
    tmp_path = runs
    single = json.loads((tmp_path / "single" / "ece_rank0.json").read_text())
    ranks = [json.loads((tmp_path / "multi" / f"ece_rank{r}.json").read_text()) for r in (0, 1)]
    assert single["scored_rows"] == [15]
    assert [r["scored_rows"] for r in ranks] == [[7], [8]]
    # compute_metrics and predict see the 15 examples once each: not the one a process repeats to even out
    # the last batch (Seq2SeqTrainer gathers with accelerator.gather, which keeps it)
    for rank in (single, *ranks):
        assert rank["compared_rows"] == [15, 15] and rank["predicted_rows"] == 15  # evaluate, then predict
        assert rank["eval_accuracy"] == single["eval_accuracy"]
    for rank in ranks:
        assert rank["predictions"] == single["predictions"]
        assert rank["confidences"] == pytest.approx(single["confidences"], rel=1e-4)
        for key in ("eval_ece", "eval_avg_confidence"):
            assert math.isclose(rank[key], single[key], rel_tol=1e-4, abs_tol=1e-6), key


@pytest.mark.slow
def test_evaluation_losses_count_each_example_once(runs: Path) -> None:
    """Under two processes the evaluation loss and its components average the 15 examples once each, as one
    process does: not the example the second process repeats to fill its last batch (8 + 7 + 1 repeated).
    Evaluated again in batches of 4 (one process) and 2 per process (the last one 1 + 1 repeated), they are
    the same: means over the set, not over batches."""
    single = json.loads((runs / "single" / "ece_rank0.json").read_text())["eval_losses"]
    assert set(single) == {"eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"}
    reports = [(runs / "single" / "losses_rank0.json", "small batches")]
    for rank in (0, 1):
        reports += [
            (runs / "multi" / f"ece_rank{rank}.json", rank),
            (runs / "multi" / f"losses_rank{rank}.json", rank),
        ]
    for path, context in reports:
        losses = json.loads(path.read_text())
        multi = losses.get("eval_losses", losses)
        assert multi.keys() == single.keys()
        for key, value in single.items():
            assert math.isclose(multi[key], value, rel_tol=1e-5), (context, path.name, key, multi[key], value)


CAUSAL_SCRIPT = Path(__file__).parent / "scripts" / "ddp_train_causal.py"


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_for_a_causal_student(tmp_path: Path) -> None:
    single, multi = run_one_and_two_processes(CAUSAL_SCRIPT, tmp_path)
    assert_same_training_logs(single, multi, ("loss", "loss_label", "loss_rationale", "loss_mi", "grad_norm"))
    for key in ("eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"):
        assert math.isclose(single["eval"][key], multi["eval"][key], rel_tol=1e-5), key


@pytest.mark.slow
def test_processes_that_would_not_train_together_are_refused(tmp_path: Path) -> None:
    """On a machine without GPUs, transformers joins torchrun's processes only with ``use_cpu``; without it
    each process would train its own copy and write the same output folder. The run stops, saying so."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("with a GPU the processes do train together")
    command = [_torchrun(), "--nproc_per_node", "2", "--master_port", str(free_local_port()), "-m", "hf_cotmi.cli",
               "train", "--dataset", "synthetic", "--synthetic-train-size", "8", "--synthetic-test-size", "3",
               "--max-steps", "1", "--tiny-d-model", "16", "--tiny-num-layers", "1", "--tiny-num-heads", "2",
               "--tiny-d-ff", "32", "--report-to", "none", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "use_cpu" in result.stderr and "WORLD_SIZE=2" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "out" / "results.json").exists()
