#!/usr/bin/env python3
"""One device call of a benchmark sweep: build the students from the kit, sweep for a fixed time, pack.

A lent GPU machine starts bare, reaches nothing, gives 10 minutes a command and returns at most 8 files
from ``$OUT``. This script is the whole command of such a call, from the repository root:

1. ``device_kit.py build`` (when ``--kit`` exists): the benchmark students and the DSS data from the kit;
2. the finished runs of earlier calls are restored from ``--restore`` (a results archive that an earlier
   call wrote, carried back): ``replicate.py`` skips them;
3. ``parallel_sweep.py --workers N --time-limit S -- <replicate.py arguments>``: seed-major, so a sweep
   cut by the limit has whole seeds first;
4. ``$OUT/<name>.tar.gz``: the sweep folder without its checkpoints (``protocol.json``, the results
   files and plots, every ``done.json``, the logs), plus ``$OUT/<name>.md`` (the table) and
   ``$OUT/environment.txt`` (GPU, torch, transformers).

Rerun the same call with the archive carried back (``--restore``) to continue a sweep that the time limit
cut: the finished runs are kept, the cut ones start again.

Examples::

    # on the device, the CQA rows of issue 17 (carry runs/device-kit and, from a second call on,
    # runs/device-results):
    python examples/benchmarks/device_sweep.py --name cqa-minilm-gpu --workers 16 --time-limit 420 \\
        --restore runs/device-results/cqa-minilm-gpu.tar.gz -- --dataset cqa --data-dir runs/dss ...
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import device_kit  # noqa: E402 - sibling scripts
import parallel_sweep  # noqa: E402


def results_archive(folder: Path, archive: Path) -> list[str]:
    """Pack ``folder`` without its checkpoints into ``archive`` (gzip tar); return the names packed.

    Examples:
        >>> # results_archive(Path("runs/cqa-minilm-gpu"), Path(os.environ["OUT"]) / "cqa-minilm-gpu.tar.gz")
    """
    names: list[str] = []
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if not path.is_file() or any(part.startswith("checkpoint-") for part in relative.parts):
                continue
            tar.add(path, arcname=str(Path(folder.name) / relative))
            names.append(str(relative))
    return names


def restore_archive(archive: Path, into: Path, name: str | None = None) -> int:
    """Unpack a results archive of :func:`results_archive` into ``into``; the number of finished runs in it.

    Raises:
        SystemExit: ``name`` is given and the archive holds another folder than ``name`` (another sweep's
            archive would be unpacked beside this sweep's folder, and none of its runs skipped).
    """
    with tarfile.open(archive) as tar:
        folders = sorted({member.name.split("/")[0] for member in tar.getmembers()})
        if name is not None and folders not in ([], [name]):
            raise SystemExit(
                f"--restore {archive} holds {', '.join(folders)}, not this sweep's folder {name}: carry the "
                "archive of this --name"
            )
        tar.extractall(into, filter="data")
        return sum(1 for member in tar.getmembers() if member.name.endswith("/done.json"))


def environment_text() -> str:
    """The machine, as the results tables cite it: GPU, Python and the versions of the packages used."""
    from importlib import metadata

    import torch

    lines = [f"python {platform.python_version()}"]
    for name in ("torch", "transformers", "datasets", "accelerate", "pyarrow", "tokenizers", "numpy"):
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name} not installed")
    if torch.cuda.is_available():
        lines.append(f"gpu {torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible)")
    else:
        lines.append("gpu none")
    lines.append(f"cpus {os.cpu_count()}")
    return "\n".join(lines) + "\n"


def parse_options(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], Path]:
    """``(this script's options, the replicate.py arguments, the sweep's output folder)`` of a command line.

    Raises:
        SystemExit: no ``--``, a missing option, or an ``--output-dir`` that does not end in ``--name``.
    """
    argv = list(argv)
    if "--" not in argv:
        raise SystemExit("usage: device_sweep.py --name NAME [options] -- <replicate.py arguments>")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", required=True, help="the sweep's name: OUT/<name>.tar.gz, runs/<name>")
    parser.add_argument("--workers", type=int, default=8, help="runs at once (parallel_sweep.py --workers)")
    parser.add_argument("--time-limit", type=float, required=True, help="seconds the sweep may take")
    parser.add_argument(
        "--kit", type=Path, default=Path("runs/device-kit"), help="device_kit.py pack's folder"
    )
    parser.add_argument("--student", type=Path, default=Path("runs/student"), help="seq2seq student to build")
    parser.add_argument("--causal-student", type=Path, help="decoder-only student to build")
    parser.add_argument("--data-out", type=Path, default=Path("runs/dss"), help="where the kit's data goes")
    parser.add_argument("--restore", type=Path, help="a results archive of an earlier call, carried back")
    parser.add_argument("--out", type=Path, default=None, help="where the files go back from (default $OUT)")
    options = parser.parse_args(argv[:cut])
    sweep_arguments = argv[cut + 1 :]
    output_dir = parallel_sweep._output_dir(sweep_arguments)
    if output_dir is None:
        parser.error("the sweep's arguments need --output-dir")
    if output_dir.name != options.name:
        parser.error(f"--output-dir {output_dir} should end in --name {options.name} (the archive's folder)")
    return options, sweep_arguments, output_dir


def main(argv: Sequence[str] | None = None) -> int:
    options, sweep_arguments, output_dir = parse_options(sys.argv[1:] if argv is None else argv)
    out = options.out or Path(os.environ.get("OUT", "runs/device-out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "environment.txt").write_text(environment_text())

    if options.kit.is_dir():
        device_kit.unpack_data(options.kit, options.data_out)
        device_kit.build_students(
            options.kit,
            {"make_offline_student": options.student, "make_offline_causal_student": options.causal_student},
        )
    wanted = parallel_sweep.argument_value(sweep_arguments, "--student")
    if (
        wanted is not None
        and Path(wanted) == options.student
        and not (options.student / "config.json").is_file()
    ):
        raise SystemExit(
            f"the sweep's student {wanted} does not exist and {options.kit} holds no kit to build it from: "
            "carry the kit (device_kit.py pack)"
        )
    if options.restore is not None and options.restore.is_file():
        restored = restore_archive(options.restore, output_dir.parent, output_dir.name)
        print(f"restored {restored} finished runs from {options.restore}", flush=True)

    log = io.StringIO()
    command = [sys.executable, str(HERE / "parallel_sweep.py"), "--workers", str(options.workers)]
    command += ["--time-limit", str(options.time_limit), "--", *sweep_arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # shown as it comes (the call's output) and kept for OUT
        print(line, end="", flush=True)
        log.write(line)
    code = process.wait()
    (out / f"{options.name}.log").write_text(log.getvalue())
    if output_dir.is_dir():
        packed = results_archive(output_dir, out / f"{options.name}.tar.gz")
        print(f"packed {len(packed)} files of {output_dir} into {out / options.name}.tar.gz", flush=True)
        if (output_dir / "results.md").is_file():
            (out / f"{options.name}.md").write_text((output_dir / "results.md").read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
