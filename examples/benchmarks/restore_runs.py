#!/usr/bin/env python3
"""Put the finished runs of a committed ``results.json`` back into a sweep folder, so a rerun skips them.

A ``replicate.py`` sweep spread over several sittings keeps its state in the output folder: a finished
run is ``runs/<method>/seed<k>/done.json`` (``runs/frac<f>/...`` in a size sweep), the settings are
``protocol.json``. When that folder is lost (a fresh machine, a new checkout: run folders are not
committed) but the report was, this script writes every run the ``results.json`` holds back as its
``done.json``, the protocol as ``protocol.json`` and the report's methods and seeds as the sweep's plan
(``sweep_plan.json``: a report in progress says how many runs of the plan finished; not with
``--student-sha256``, which starts a new sweep); rerunning the sweep's command then trains only the runs
that are missing. Existing ``done.json`` files are left as they are, and a folder whose ``protocol.json``
differs from the report's is refused (``replicate.py`` would refuse to mix them too).
``--student-sha256 PREFIX`` restores only the runs trained on that student build (their recorded
``student_sha256`` starts with it); the others, and runs that recorded none, are counted and left out,
so a new sweep on one build can start from the runs a report holds on it.

Example::

    python examples/benchmarks/restore_runs.py docs/assets/benchmarks/esnli-settle-cpu/results.json \\
        runs/esnli_settle_cpu
    # -> restored 12 finished runs into runs/esnli_settle_cpu (0 already there)
    python examples/benchmarks/restore_runs.py docs/assets/benchmarks/esnli-settle-cpu/results.json \\
        runs/esnli_seeded_cpu --student-sha256 294a62738a59
    # -> restored 14 finished runs into runs/esnli_seeded_cpu (0 already there; 12 on another student left out)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicate import record_plan, run_folder  # noqa: E402 - the sibling script: one definition of a run's folder
from sweep_report import run_name, write_json  # noqa: E402


def restore_runs(results: Path, output_dir: Path, student_sha256: str | None = None) -> tuple[int, int, int]:
    """Write each run of ``results`` as its ``done.json`` under ``output_dir``.

    Returns ``(restored, already there, left out)``: with ``student_sha256`` (a prefix of the student
    weights' fingerprint) a run that recorded another fingerprint, or none, is left out.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> report = {"protocol": {"max_steps": 2}, "runs": [{"method": "dss", "seed": 0, "test_accuracy": 0.5}]}
        >>> _ = (folder / "results.json").write_text(json.dumps(report))
        >>> restore_runs(folder / "results.json", folder / "out"), restore_runs(folder / "results.json", folder / "out")
        ((1, 0, 0), (0, 1, 0))
        >>> restore_runs(folder / "results.json", folder / "other", student_sha256="294a")  # recorded none
        (0, 0, 1)
        >>> json.loads((folder / "out" / "runs" / "dss" / "seed0" / "done.json").read_text())["test_accuracy"]
        0.5
    """
    try:
        stored = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"restore_runs: cannot read {results} as a results.json ({error})") from error
    if not isinstance(stored, dict) or "protocol" not in stored or not isinstance(stored.get("runs"), list):
        raise SystemExit(
            f"restore_runs: {results} has no 'protocol' and 'runs' (not a replicate.py results.json)"
        )
    protocol = output_dir / "protocol.json"
    if protocol.is_file() and json.loads(protocol.read_text()) != stored["protocol"]:
        raise SystemExit(
            f"restore_runs: {protocol} differs from the protocol in {results}: these runs belong to another sweep"
        )
    if student_sha256 is not None and not student_sha256.strip():
        raise SystemExit(
            "restore_runs: --student-sha256 is empty; give the fingerprint (or its first characters)"
        )
    _check_one_record_per_run(results, stored["runs"])
    restored = present = left_out = 0
    for run in stored["runs"]:
        if student_sha256 is not None and not str(run.get("student_sha256") or "").startswith(
            student_sha256.strip().lower()
        ):
            left_out += 1
            continue
        done = (
            run_folder(output_dir, str(run["method"]), int(run["seed"]), run.get("train_fraction"))
            / "done.json"
        )
        if done.is_file():
            present += 1
            continue
        done.parent.mkdir(parents=True, exist_ok=True)
        write_json(done, run)
        restored += 1
    if not protocol.is_file():
        output_dir.mkdir(parents=True, exist_ok=True)  # also when no run was restored into it
        write_json(protocol, stored["protocol"])
    if student_sha256 is None:  # the whole report back: a report in progress counts against its plan again
        record_plan(output_dir, stored.get("methods") or [], stored.get("seeds") or [])
    return restored, present, left_out


def _check_one_record_per_run(results: Path, runs: list) -> None:
    """Refuse, before anything is written, a run without method and seed, and a run the report holds twice
    (the second would be counted as "already there" and left out silently)."""
    first_index: dict[tuple[str, int, float | None], int] = {}
    for index, run in enumerate(runs):
        if not isinstance(run, dict) or not {"method", "seed"} <= set(run):
            raise SystemExit(f"restore_runs: {results}: run {index} has no 'method' and 'seed'")
        key = (str(run["method"]), int(run["seed"]), run.get("train_fraction"))
        if key in first_index:
            raise SystemExit(
                f"restore_runs: {results}: runs {first_index[key]} and {index} are both {run_name(run)}: a "
                "report holds each run once; keep one of them"
            )
        first_index[key] = index


def main(argv: Sequence[str] | None = None) -> tuple[int, int, int]:
    """Parse the command line, restore the runs, print how many."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results.json written by replicate.py")
    parser.add_argument("output_dir", type=Path, help="the sweep's --output-dir")
    parser.add_argument(
        "--student-sha256",
        metavar="PREFIX",
        help="restore only the runs whose recorded student_sha256 starts with PREFIX (one student build)",
    )
    args = parser.parse_args(argv)
    restored, present, left_out = restore_runs(args.results, args.output_dir, args.student_sha256)
    skipped = f"; {left_out} on another student left out" if args.student_sha256 is not None else ""
    print(
        f"restored {restored} finished runs into {args.output_dir} ({present} already there{skipped})",
        flush=True,
    )
    return restored, present, left_out


if __name__ == "__main__":
    main()
