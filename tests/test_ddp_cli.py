"""``hf-cotmi`` under ``torchrun --nproc_per_node 2`` on the CPU (gloo), as users start it on several GPUs.

The run must end on both processes, print each line once, write its files once (from the main process) with
the figures one process gets on the same global batch, and ``evaluate`` must run once, not once per process.
The held-out splits are smaller than one evaluation batch, so the second process holds only examples the
sampler repeats to fill its batch.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_ddp import _torchrun

from hf_cotmi.teacher.serve import free_local_port

TINY = ["--tiny-d-model", "16", "--tiny-num-layers", "1", "--tiny-num-heads", "2", "--tiny-d-ff", "32"]
DATA = ["--dataset", "synthetic", "--synthetic-train-size", "16", "--synthetic-valid-size", "5",
        "--synthetic-test-size", "7"]  # fmt: skip
TRAIN = [*DATA, *TINY, "--max-steps", "4", "--logging-steps", "1", "--eval-strategy", "steps", "--eval-steps", "2",
         "--save-steps", "2", "--learning-rate", "5e-3", "--confidence", "first_token", "--use-cpu", "--seed", "0",
         "--data-seed", "0", "--report-to", "none", "--disable-tqdm", "true"]  # fmt: skip
TIMEOUT = 150
RECORDING_MAIN = Path(__file__).parent / "scripts" / "ddp_cli_main.py"  # hf_cotmi.cli.main, and what it left


def _cli(
    arguments: list[str], cwd: Path, processes: int, program: tuple[str, ...] = ("-m", "hf_cotmi.cli")
) -> subprocess.CompletedProcess:
    """``hf-cotmi ARGUMENTS`` (or ``program``) as one process or under torchrun; a run past the timeout fails
    the test, its processes (torchrun's workers too) ended."""
    command = [sys.executable, *program, *arguments]
    if processes > 1:
        command = [_torchrun(), "--nproc_per_node", str(processes), "--master_port", str(free_local_port()),
                   *program, *arguments]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()  # torchrun passes SIGTERM on to its workers, which run in sessions of their own
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"hung for {TIMEOUT} s: {' '.join(arguments[:1])}\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _comparable(stdout: str, folder: str) -> list[str]:
    """Printed lines without what differs between the runs: the output folder, seconds, and how the batch is
    made up (``batch 2 per device x 2 processes = 4`` is ``batch 4``: the effective batch stays)."""
    lines = [line.replace(folder, "OUT") for line in stdout.splitlines()]
    lines = [re.sub(r"  \d+s$", "", line) for line in lines]
    return [re.sub(r"batch (?:[^,=]*= )?(\d+),", r"batch \1,", line) for line in lines]


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory) -> Path:
    """``train`` as two torchrun processes (batch 2 each) and as one process (batch 4)."""
    root = tmp_path_factory.mktemp("ddp-cli")
    multi = _cli(["train", *TRAIN, "--per-device-train-batch-size", "2", "--output-dir", "multi"], root, 2,
                 program=(str(RECORDING_MAIN), str(root / "returned")))  # fmt: skip
    (root / "multi.out").write_text(_succeeded(multi))
    single = _cli(["train", *TRAIN, "--per-device-train-batch-size", "4", "--output-dir", "single"], root, 1)
    (root / "single.out").write_text(_succeeded(single))
    return root


@pytest.mark.slow
def test_train_under_torchrun_ends_on_both_processes_and_prints_each_line_once(train_runs: Path) -> None:
    multi = _comparable((train_runs / "multi.out").read_text(), "multi")
    single = _comparable((train_runs / "single.out").read_text(), "single")
    assert multi == single  # the same lines, each once: the examples, the evaluations, the saved folder
    assert "batch 2 per device x 2 processes = 4," in (train_runs / "multi.out").read_text()
    assert sum(line.startswith("  input:") for line in multi) == 3
    assert sum(line.startswith("  eval at step") for line in multi) == 2


@pytest.mark.slow
def test_train_under_torchrun_waits_for_the_main_process_and_closes_the_process_group(
    train_runs: Path,
) -> None:
    """No process returns while the main one is still saving (with gloo, a process that left first with its
    process group open sometimes aborted, and torchrun then stopped the main one before it had saved)."""
    saved_at = (train_runs / "multi" / "results.json").stat().st_mtime  # written last
    for rank in (0, 1):
        returned = json.loads((train_runs / "returned" / f"rank{rank}.json").read_text())
        assert returned["status"] == 0, rank
        assert returned["returned_at"] >= saved_at, (rank, returned["returned_at"], saved_at)
        assert not returned["process_group_open"], rank


@pytest.mark.slow
def test_train_under_torchrun_saves_the_run_with_the_single_process_figures(train_runs: Path) -> None:
    multi, single = train_runs / "multi", train_runs / "single"
    for name in ("results.json", "hf_cotmi_config.json", "README.md", "reliability_diagram.png",
                 "model.safetensors", "tokenizer.json", "test_results.json"):  # fmt: skip
        assert (multi / name).is_file(), name
    results = [json.loads((folder / "results.json").read_text()) for folder in (multi, single)]
    assert [len(r["examples"]) for r in results] == [3, 3]
    for key in ("test_loss", "test_loss_label", "test_loss_rationale", "test_loss_mi", "test_ece",
                "test_avg_confidence", "test_accuracy"):  # fmt: skip
        one, two = results[1]["metrics"][key], results[0]["metrics"][key]
        assert math.isclose(one, two, rel_tol=1e-5, abs_tol=1e-7), (key, one, two)
    assert results[0]["metrics"]["test_avg_confidence"] > 0  # so the comparison says something
    sidecars = [json.loads((folder / "hf_cotmi_config.json").read_text()) for folder in (multi, single)]
    assert sidecars[0] == sidecars[1]


@pytest.mark.slow
def test_evaluate_under_torchrun_runs_once(train_runs: Path) -> None:
    """Every process used to evaluate the whole split, print the report and write the same files at once."""
    arguments = ["evaluate", "--model", "single", "--disable-tqdm", "true", "--output-file", "report.json"]
    result = _cli(arguments, train_runs, 2)
    multi = _succeeded(result)
    report = json.loads((train_runs / "report.json").read_text())
    assert report["num_examples"] == 7
    assert multi.count("synthetic-arithmetic-cot test (7 examples") == 1, multi
    assert multi.count("metrics written to report.json") == 1, multi
    assert result.stderr.count("evaluate: note: runs in one process") == 1, result.stderr[-2000:]


@pytest.mark.slow
def test_demo_under_torchrun_reports_its_files_once(tmp_path: Path) -> None:
    """The lines after training (files, diagram, training curve) come from the main process only."""
    arguments = ["demo", "--smoke", *DATA, *TINY, "--max-steps", "2", "--use-cpu", "--num-threads", "1",
                 "--output-dir", "demo-out"]  # fmt: skip
    stdout = _succeeded(_cli(arguments, tmp_path, 2))
    for start in ("files in demo-out/", "reliability diagram:", "training curve:", "demo finished in"):
        assert sum(line.startswith(start) for line in stdout.splitlines()) == 1, (start, stdout)
    assert "training curve: demo-out/training_curve.png" in stdout
    assert (tmp_path / "demo-out" / "training_curve.png").is_file()
    assert (tmp_path / "demo-out" / "results.json").is_file()
