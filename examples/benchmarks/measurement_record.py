"""A speed or memory benchmark's result as a file: the figures with the command and machine that gave them.

The measuring scripts (``memory.py``, ``mi_overhead.py``, ``throughput.py``, ``teacher_throughput.py``)
print their ratios; with ``--output FILE`` they also write them here, so a figure quoted in the docs can
name the file it came from and say what the machine was doing (its load average) while it was measured.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "memory.json"
    >>> record = write_measurement(path, {"time_ratio": 1.05}, script="memory.py", argv=["--shapes", "causal"])
    >>> stored = json.loads(path.read_text())
    >>> stored["command"], stored["result"]
    ('python examples/benchmarks/memory.py --shapes causal', {'time_ratio': 1.05})
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sweep_report import write_json


def machine_facts() -> dict[str, Any]:
    """What a timing depends on: the CPU count, the load average now, the versions, the accelerator.

    Example:
        >>> sorted(machine_facts())[:3]
        ['cpu_count', 'gpu', 'load_average_1_5_15_min']
    """
    versions = {}
    for package in ("torch", "transformers", "hf-cotmi"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    gpu = None
    torch = sys.modules.get("torch")  # only when the benchmark imported it: this module imports nothing heavy
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "versions": versions,
    }


def write_measurement(
    path: str | os.PathLike[str],
    result: Mapping[str, Any],
    *,
    script: str,
    argv: Sequence[str],
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``result`` (the printed ratios) with the command, the machine and the raw figures to ``path``.

    Args:
        path: the JSON file to write (its folder is made; the file is replaced atomically).
        result: the ratios the script printed as its last line.
        script: the script's file name, e.g. ``"memory.py"``.
        argv: the script's arguments, as given (``--output`` included is fine: it names this file).
        details: the raw figures behind the ratios (per-variant step times, peak memory), and the settings.

    Returns:
        The record written.
    """
    record = {
        "command": shlex.join(["python", f"examples/benchmarks/{script}", *argv]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "details": dict(details or {}),
        "machine": machine_facts(),
        "result": dict(result),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, record)
    return record


def variant_figures(median_seconds: Mapping[str, float], peak_bytes: Mapping[str, int]) -> dict[str, Any]:
    """The raw figures of a variant comparison, for ``details``: each variant's median step (seconds, to the
    microsecond, so a ratio can be recomputed from them) and peak memory (MiB).

    Example:
        >>> variant_figures({"dss": 1.25}, {"dss": 3 * 2**20})
        {'median_step_s': {'dss': 1.25}, 'peak_memory_mib': {'dss': 3.0}}
    """
    return {
        "median_step_s": {name: round(seconds, 6) for name, seconds in median_seconds.items()},
        "peak_memory_mib": {name: round(peak / 2**20, 1) for name, peak in peak_bytes.items()},
    }
