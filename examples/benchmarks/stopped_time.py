"""Measure how long this process was stopped (SIGSTOP, a suspended job), so run times can leave it out.

A benchmark sweep that shares a machine is sometimes paused (``kill -STOP``) while something else runs,
then continued (``kill -CONT``). The wall clock goes on while the process is stopped, so a run's measured
training time would include the pause. :class:`StoppedTime` runs a daemon thread that wakes every
``interval`` seconds and notes the monotonic clock: a stopped process runs no thread, so on waking after a
pause the thread sees a gap far longer than its interval, and counts the excess as stopped time. Gaps up
to ``threshold`` seconds are ordinary scheduling delay on a loaded machine and count as running.

Example::

    meter = StoppedTime().start()
    ...  # the work; the process may be stopped and continued meanwhile
    meter.stop()
    work_seconds = wall_seconds - meter.seconds
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


def stopped_seconds(wake_times: Iterable[float], interval: float, threshold: float) -> float:
    """The time a sleeper that meant to wake every ``interval`` seconds spent stopped, from its wake times.

    A gap between consecutive wake times longer than ``threshold`` counts ``gap - interval`` as stopped;
    shorter gaps (scheduling delay) count nothing.

    Examples:
        >>> stopped_seconds([0.0, 1.0, 2.0, 32.0, 33.0], interval=1.0, threshold=5.0)
        29.0
        >>> stopped_seconds([0.0, 1.0, 3.5, 4.5], interval=1.0, threshold=5.0)
        0.0
        >>> stopped_seconds([], interval=1.0, threshold=5.0)
        0.0
    """
    if threshold < interval:
        raise ValueError(f"threshold {threshold} s is below the wake interval {interval} s: expected >= it")
    total = 0.0
    previous: float | None = None
    for now in wake_times:
        if previous is not None and now - previous > threshold:
            total += now - previous - interval
        previous = now
    return total


class StoppedTime:
    """A background meter of the time this process spends stopped (see the module docstring).

    Args:
        interval: how often the meter's thread wakes, in seconds.
        threshold: a gap between wakes longer than this counts as a stop (``gap - interval`` seconds).

    Example:
        >>> meter = StoppedTime(interval=0.01, threshold=1.0).start()
        >>> meter.stop().seconds
        0.0
    """

    def __init__(self, interval: float = 1.0, threshold: float = 5.0) -> None:
        stopped_seconds([], interval, threshold)  # checks the pair
        self.interval, self.threshold = interval, threshold
        self._seconds = 0.0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def seconds(self) -> float:
        """The stopped time counted so far (a stop still under way is counted once the process runs)."""
        with self._lock:
            return self._seconds

    def start(self) -> StoppedTime:
        """Start counting (once); returns the meter."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="stopped-time", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> StoppedTime:
        """Stop counting; returns the meter, whose :attr:`seconds` is then final."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        return self

    def _watch(self) -> None:
        previous = time.monotonic()
        while True:
            done = self._done.wait(self.interval)
            now = time.monotonic()  # also after the last wait: a stop just before stop() still counts
            gap = stopped_seconds([previous, now], self.interval, self.threshold)
            if gap:
                with self._lock:
                    self._seconds += gap
            if done:
                return
            previous = now
