"""The benchmarks' stopped-time meter: a process paused with SIGSTOP has the pause counted, and only it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_benchmarks_smoke import BENCHMARKS, _load

# the child counts with a fine interval, so a short stop is measured well
CHILD = f"""
import sys
sys.path.insert(0, {str(BENCHMARKS)!r})
from stopped_time import StoppedTime
meter = StoppedTime(interval=0.05, threshold=0.5).start()
print("ready", flush=True)
sys.stdin.readline()
print(meter.stop().seconds, flush=True)
"""


def _stopped_seconds_of_a_child(pause: float | None) -> float:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        if pause is not None:
            os.kill(child.pid, signal.SIGSTOP)
            time.sleep(pause)
            os.kill(child.pid, signal.SIGCONT)
        time.sleep(0.3)
        out, _ = child.communicate("go\n", timeout=30)
    finally:
        child.kill()
    return float(out.strip())


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job-control signals")
def test_a_stopped_process_counts_its_pause_and_a_running_one_counts_nothing() -> None:
    assert _stopped_seconds_of_a_child(None) == 0.0
    measured = _stopped_seconds_of_a_child(2.0)
    assert 1.5 < measured < 3.0  # the 2 s stop, less up to one interval, plus the time to deliver SIGCONT


def test_stopped_seconds_counts_only_long_gaps_beyond_the_interval() -> None:
    stopped = _load("stopped_time")
    # written out: gaps 1, 1, 30, 1, 6 -> the 30 s and 6 s gaps are stops of 29 and 5 s
    wakes = [0.0, 1.0, 2.0, 32.0, 33.0, 39.0]
    expected = sum(b - a - 1.0 for a, b in zip(wakes, wakes[1:]) if b - a > 5.0)
    assert stopped.stopped_seconds(wakes, interval=1.0, threshold=5.0) == expected == 34.0
    assert stopped.stopped_seconds(wakes, interval=1.0, threshold=30.0) == 0.0
    with pytest.raises(ValueError, match="below the wake interval"):
        stopped.StoppedTime(interval=2.0, threshold=1.0)


def test_the_train_clock_leaves_the_stopped_time_out() -> None:
    replicate = _load("replicate")
    clock = replicate.train_clock_callback(100.0)
    clock.on_train_begin(None, None, None)

    class Stopped:
        seconds = 40.0

        def stop(self) -> Stopped:
            return self

    clock.meter.stop()
    clock.meter = Stopped()
    clock.on_train_end(None, None, None)
    assert clock.stopped_seconds() == 40.0
    assert 60.0 <= clock.seconds() < 61.0  # 100 s before the resume, a moment of running, 40 s stopped
