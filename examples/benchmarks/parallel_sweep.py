#!/usr/bin/env python3
"""Run a ``replicate.py`` sweep as parallel worker processes, one (method, seed) run per job, then report.

``replicate.py`` trains its runs one after the other. On a machine with several cores, or on one GPU
that one run does not fill, several runs at once finish a sweep sooner. This script splits the sweep
given after ``--`` into one job per method and seed, in seed-major order (every method of seed 0, then
of seed 1, ...: a sweep cut short has whole seeds, so its paired differences are usable), and keeps
``--workers`` of them running, each as ``replicate.py <arguments> --methods M --seeds S``. Every job
writes its log to ``--log-dir/<method>_seed<k>.log``. When all jobs have ended it runs
``replicate.py <arguments> --report-only``, which writes ``results.json``, ``results.md`` and the plots
over every finished run in the folder (this sweep's and any other sweep's with the same protocol, e.g. the
DSS runs that new methods pair with).

Resumable as ``replicate.py`` is: a finished run is skipped, an unfinished one continues from its last
checkpoint, so rerunning the same command after an interruption goes on where it stopped. A job that
fails is reported with its log's tail; the others go on, and the exit status is 1. ``--time-limit
SECONDS`` (for a machine lent for a fixed time) starts no job after that many seconds and stops the
running ones then; the report covers what finished, and the exit status is 3 while runs are left.

Examples::

    # the e-SNLI settle sweep on 2 CPU cores (one thread per worker)
    python examples/benchmarks/parallel_sweep.py --workers 2 --log-dir runs/settle-logs -- \\
        --dataset esnli --data-dir ../shared/data/dss --train-split valid --train-size 4000 \\
        --valid-size 1000 --test-size 2000 --student runs/student --max-steps 1200 --eval-steps 200 \\
        --patience 0 --methods finetune dss dss_mi_paper dss_mi_masked --seeds 0 1 2 3 4 --threads 1 \\
        --output-dir runs/esnli_settle_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

REPLICATE = Path(__file__).resolve().with_name("replicate.py")
sys.path.insert(0, str(REPLICATE.parent))
import replicate  # noqa: E402 - the sibling script (its top level is light): its defaults are the sweep's

DEFAULT_SEEDS = [str(seed) for seed in replicate.default_seeds()]


def split_sweep(arguments: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(the other arguments, methods, seeds)`` of a ``replicate.py`` command line.

    Examples:
        >>> split_sweep(["--dataset", "esnli", "--methods", "dss", "finetune", "--seeds", "0", "1"])
        (['--dataset', 'esnli'], ['dss', 'finetune'], ['0', '1'])
        >>> split_sweep(["--seeds=3"])[1:]
        (['finetune', 'dss', 'dss_mi_paper', 'dss_mi_masked'], ['3'])
    """
    names = ("--methods", "--seeds")
    rest = [token for option, token in tokens_by_option(arguments) if option not in names]
    values = {name: option_values(arguments, name) for name in names}
    if "--report-only" in rest:
        raise ValueError("--report-only is this script's last step; leave it out of the sweep's arguments")
    for name in names:
        if values[name] == []:
            raise ValueError(f"{name} is given without a value")
    return (
        rest,
        values["--methods"] or list(replicate.DEFAULT_METHODS),
        values["--seeds"] or DEFAULT_SEEDS,
    )


def jobs_in_order(methods: Sequence[str], seeds: Sequence[str]) -> list[tuple[str, str]]:
    """Seed-major ``(method, seed)`` jobs: every method of the first seed before the next seed; a repeated
    method or seed gives one job (two processes must never train in one run folder).

    Examples:
        >>> jobs_in_order(["dss", "finetune"], ["0", "1"])
        [('dss', '0'), ('finetune', '0'), ('dss', '1'), ('finetune', '1')]
        >>> jobs_in_order(["dss", "dss"], ["0", "1", "0"])
        [('dss', '0'), ('dss', '1')]
    """
    return list(dict.fromkeys((method, seed) for seed in seeds for method in methods))


def threads_per_worker(rest: Sequence[str], workers: int, cores: int | None) -> list[str]:
    """``rest`` with ``--threads`` added when it has none: the cores shared out between the workers
    (without it every worker's torch would use every core, and N workers would fight over them).

    Examples:
        >>> threads_per_worker(["--output-dir", "x"], 2, 8)
        ['--output-dir', 'x', '--threads', '4']
        >>> threads_per_worker(["--threads", "1"], 2, 8)
        ['--threads', '1']
    """
    if any(arg == "--threads" or arg.startswith("--threads=") for arg in rest):
        return list(rest)
    return [*rest, "--threads", str(max(1, (cores or 1) // workers))]


def minutes_left(durations: Sequence[float], remaining: int, workers: int) -> float | None:
    """About how many minutes the ``remaining`` jobs take, ``workers`` at a time, at the mean duration of
    the jobs that trained in this sweep (None before the first one has).

    Examples:
        >>> minutes_left([40.0, 30.0], remaining=4, workers=2)
        70.0
        >>> minutes_left([], remaining=4, workers=2) is None
        True
    """
    if not durations:
        return None
    return sum(durations) / len(durations) * remaining / max(1, workers)


def option_values(arguments: Sequence[str], name: str) -> list[str] | None:
    """The values of a multi-valued option: ``--name a b`` or ``--name=a [b ...]`` (None: not given).

    The values run up to the next token that starts with ``--`` (:func:`tokens_by_option`).

    Examples:
        >>> option_values(["--train-fractions", "0.25", "1.0", "--seeds", "0"], "--train-fractions")
        ['0.25', '1.0']
        >>> option_values(["--train-fractions=0.5", "--seeds", "0"], "--train-fractions")
        ['0.5']
        >>> option_values(["--seeds", "0"], "--train-fractions") is None
        True
        >>> option_values(["--seeds", "0", "--output-dir", "x", "--seeds", "3", "4"], "--seeds")
        ['3', '4']
    """
    values: list[str] | None = None
    for option, token in tokens_by_option(arguments):
        if option != name:
            continue
        if token.startswith("--"):  # given twice: the last one counts, as for the script's own parser
            _, equals, value = token.partition("=")
            values = [value] if equals else []
        else:
            assert values is not None
            values.append(token)
    return values


def tokens_by_option(arguments: Sequence[str]) -> list[tuple[str | None, str]]:
    """Each token with the option it belongs to: an option (``--name`` or ``--name=value``) to itself, a
    value to the last option before it (None before the first option).

    :func:`option_values` and :func:`split_sweep` read a command line through this one rule.

    Examples:
        >>> tokens_by_option(["x", "--seeds", "0", "1", "--methods=dss"])
        [(None, 'x'), ('--seeds', '--seeds'), ('--seeds', '0'), ('--seeds', '1'), ('--methods', '--methods=dss')]
    """
    owned: list[tuple[str | None, str]] = []
    option: str | None = None
    for token in arguments:
        if token.startswith("--"):
            option = token.partition("=")[0]
        owned.append((option, token))
    return owned


def fractions_of(arguments: Sequence[str]) -> list[float] | None:
    """The values of ``--train-fractions`` in a ``replicate.py`` command line (None: not given).

    Examples:
        >>> fractions_of(["--train-fractions", "0.25", "1.0", "--seeds", "0"])
        [0.25, 1.0]
        >>> fractions_of(["--train-fractions=0.5"])
        [0.5]
        >>> fractions_of(["--seeds", "0"]) is None
        True
    """
    values = option_values(arguments, "--train-fractions")
    return None if values is None else [float(value) for value in values]


def job_finished(output_dir: Path, method: str, seed: str, fractions: Sequence[float] | None) -> bool:
    """Whether the run of ``method`` and ``seed`` (at every fraction) already has its ``done.json``.

    Example:
        >>> job_finished(Path("no-such-folder"), "dss", "0", [0.5, 1.0])
        False
    """
    return all(
        (replicate.run_folder(output_dir, method, int(seed), fraction) / "done.json").is_file()
        for fraction in (fractions or [None])
    )


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


class JobOutcome(NamedTuple):
    """How the sweep's jobs ended: the failed ones as (method, seed, exit code), those the time limit cut."""

    failed: list[tuple[str, str, int]]
    cut: list[tuple[str, str]]


def _run_until(
    command: Sequence[str], log: Path, deadline: float | None, environment: dict[str, str] | None = None
) -> int | None:
    """Run one job (in ``environment``, else this process's); its exit code, or None when the deadline came
    first (the job is terminated).

    The log is appended to, so a run resumed over several sittings keeps the output of each.
    """
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.terminate()  # replicate.py resumes from its last complete checkpoint
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                return None


def run_jobs(
    rest: Sequence[str],
    jobs: Sequence[tuple[str, str]],
    workers: int,
    log_dir: Path,
    python: str,
    time_limit: float | None = None,
    environment: dict[str, str] | None = None,
) -> JobOutcome:
    """Run the jobs, ``workers`` at a time, each logging to ``log_dir``.

    ``time_limit`` (seconds from now): no job starts after it, and the running ones are terminated at it
    (they continue from their last checkpoint when the sweep is run again).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(jobs)
    lock = threading.Lock()
    say_lock = threading.Lock()  # print() writes a line and its newline apart: workers would interleave them

    def say(line: str) -> None:
        with say_lock:
            print(line, flush=True)

    outcome = JobOutcome([], [])
    deadline = None if time_limit is None else time.monotonic() + time_limit
    output_dir, fractions = _output_dir(rest), fractions_of(rest)

    def finished(method: str, seed: str) -> bool:
        return output_dir is not None and job_finished(output_dir, method, seed, fractions)

    to_train = sum(not finished(method, seed) for method, seed in jobs)  # the rest are not started
    durations: list[float] = []  # of the jobs that trained (not those finished before this sweep)
    ended = 0  # of the jobs that had to train

    def worker() -> None:
        nonlocal ended
        while True:
            with lock:
                if not queue:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    outcome.cut.extend(job for job in queue if not finished(*job))  # those left to train
                    queue.clear()
                    return
                method, seed = queue.pop(0)
            if finished(method, seed):  # not started: replicate.py would load the data only to skip it
                say(f"done {method} seed {seed} (finished before this sweep)")
                continue
            log = log_dir / f"{method}_seed{seed}.log"
            command = [python, str(REPLICATE), *rest, "--methods", method, "--seeds", seed]
            started = time.monotonic()
            say(f"start {method} seed {seed} (log {log})")
            code = _run_until(command, log, deadline, environment)
            minutes = (time.monotonic() - started) / 60
            with lock:
                ended += 1
                if code is None:
                    outcome.cut.append((method, seed))
                    say(f"cut {method} seed {seed} at the time limit ({minutes:.1f} min)")
                elif code:
                    outcome.failed.append((method, seed, code))
                    say(
                        f"FAILED {method} seed {seed} (exit {code}, {minutes:.1f} min):\n{_tail(log)}",
                    )
                else:
                    durations.append(minutes)
                    left = to_train - ended  # the ones running now count whole: an upper bound
                    eta = minutes_left(durations, left, workers)
                    to_go = f"; {left} of {to_train} left, about {eta:.0f} min to go" if left and eta else ""
                    say(f"done {method} seed {seed} ({minutes:.1f} min){to_go}")

    threads = [threading.Thread(target=worker) for _ in range(max(1, min(workers, len(jobs))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def argument_value(arguments: Sequence[str], name: str) -> str | None:
    """The value of option ``name`` in a command line (``--name value`` or ``--name=value``), else None;
    given twice, the last one counts, as for the script's own parser.

    Examples:
        >>> argument_value(["--seeds", "0", "--output-dir=runs/x"], "--output-dir")
        'runs/x'
    """
    value = None
    for index, token in enumerate(arguments):
        if token.startswith(f"{name}="):
            value = token.partition("=")[2]
        elif token == name and index + 1 < len(arguments):
            value = arguments[index + 1]
    return value


def _output_dir(arguments: Sequence[str]) -> Path | None:
    value = argument_value(arguments, "--output-dir")
    return None if value is None else Path(value)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: parallel_sweep.py [--workers N] [--log-dir DIR] -- <replicate.py arguments>")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--log-dir", type=Path, help="one log per job (default: OUTPUT_DIR/logs)")
    parser.add_argument(
        "--time-limit",
        type=float,
        help="seconds: start no job after it and stop the running ones at it (they resume on a rerun); "
        "for a machine lent for a fixed time. Exit status 3 when runs are left",
    )
    options = parser.parse_args(argv[:cut])
    if options.workers < 1:
        parser.error(f"--workers must be at least 1; got {options.workers}")
    if options.time_limit is not None and options.time_limit <= 0:
        parser.error(f"--time-limit must be a positive number of seconds; got {options.time_limit}")
    try:
        rest, methods, seeds = split_sweep(argv[cut + 1 :])
    except ValueError as error:
        parser.error(str(error))
    output_dir = _output_dir(rest)
    if output_dir is None:
        parser.error("the sweep's arguments need --output-dir (every job writes into the same folder)")
    unknown = [m for m in methods if m not in replicate.METHOD_NAMES]
    if unknown:
        parser.error(
            f"--methods: unknown {', '.join(unknown)}; expected some of {', '.join(replicate.METHOD_NAMES)}"
        )
    not_integers = [s for s in seeds if not s.lstrip("-").isdigit()]
    if not_integers:
        parser.error(f"--seeds: expected integers; got {', '.join(not_integers)}")
    log_dir = options.log_dir or output_dir / "logs"
    rest = threads_per_worker(rest, options.workers, os.cpu_count())
    jobs = jobs_in_order(methods, seeds)
    print(
        f"{len(jobs)} runs ({len(methods)} methods x {len(seeds)} seeds), {options.workers} at a time",
        flush=True,
    )
    # each job adds the whole sweep to the folder's plan once its settings are accepted: a report before the
    # end counts against all of it, and a sweep whose settings the folder refuses plans nothing there
    environment = {
        **os.environ,
        replicate.SWEEP_PLAN_VARIABLE: json.dumps({"methods": methods, "seeds": seeds}),
    }
    outcome = run_jobs(rest, jobs, options.workers, log_dir, sys.executable, options.time_limit, environment)
    report_methods, scope_seeds = replicate.report_scope(methods, seeds, output_dir)
    report_seeds = [str(seed) for seed in scope_seeds]
    report = [
        sys.executable,
        str(REPLICATE),
        *rest,
        "--methods",
        *report_methods,
        "--seeds",
        *report_seeds,
        "--report-only",
    ]
    code = subprocess.run(report, check=False).returncode
    if outcome.failed:
        names = ", ".join(f"{m} seed {s} (exit {c})" for m, s, c in outcome.failed)
        print(
            f"{len(outcome.failed)} of {len(jobs)} runs failed: {names}; logs in {log_dir}", file=sys.stderr
        )
        return 1
    if outcome.cut:
        names = ", ".join(f"{m} seed {s}" for m, s in outcome.cut)
        print(
            f"time limit: {len(outcome.cut)} of {len(jobs)} runs left ({names}); run the same command again "
            "to continue them",
            file=sys.stderr,
        )
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
