"""Two CPU processes (torchrun, gloo) log the same losses as one process on the same global batch."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    _run([sys.executable, str(SCRIPT), str(tmp_path / "single"), "4"], tmp_path)
    _run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(SCRIPT),
            str(tmp_path / "multi"),
            "2",
        ],
        tmp_path,
    )
    single = json.loads((tmp_path / "single" / "log_history.json").read_text())
    multi = json.loads((tmp_path / "multi" / "log_history.json").read_text())
    assert single["world_size"] == 1 and multi["world_size"] == 2
    single_logs = [e for e in single["log_history"] if "loss" in e]
    multi_logs = [e for e in multi["log_history"] if "loss" in e]
    assert len(single_logs) == len(multi_logs) == 3
    for one, two in zip(single_logs, multi_logs):
        for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
            assert math.isclose(one[key], two[key], rel_tol=1e-5), (key, one, two)
