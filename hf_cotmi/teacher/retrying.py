"""Retries with exponential backoff and jitter, honouring ``Retry-After`` up to a cap: pure policy plus one
small loop.

Examples:
    >>> import random
    >>> policy = RetryPolicy(initial_delay=1.0, max_delay=8.0, jitter=0.0)
    >>> [policy.delay(attempt, None, random.Random(0)) for attempt in range(5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    >>> policy.delay(0, 5.0, random.Random(0)), policy.delay(0, 86400.0, random.Random(0))
    (5.0, 300.0)
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

__all__ = ["RetryPolicy", "RetryableError", "parse_retry_after", "call_with_retries"]

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying a failed request.

    The wait before retry ``k`` (0-based) is ``min(max_delay, initial_delay * 2**k)``, scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` so that concurrent clients do not retry in step; a server's
    ``Retry-After`` raises it to at least that many seconds, but to no more than ``max_retry_after``: a
    server or proxy asking for a day (``Retry-After: 86400``, a spent quota) gets ``max_retry_after``
    seconds, and :func:`call_with_retries` logs a warning saying so.

    Attributes:
        max_retries: retries after the first attempt (0: no retries).
        initial_delay: seconds before the first retry.
        max_delay: longest backoff (a longer ``Retry-After`` is honoured up to ``max_retry_after``).
        jitter: relative random spread of each wait, in [0, 1].
        max_retry_after: longest wait a ``Retry-After`` can ask for, in seconds (``math.inf``: wait as
            long as the server asks).

    Examples:
        >>> RetryPolicy().max_retries, RetryPolicy().max_retry_after
        (6, 300.0)
    """

    max_retries: int = 6
    initial_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.5
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("initial_delay and max_delay must be >= 0 seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter={self.jitter} must be in [0, 1]")
        if not self.max_retry_after >= 0:  # NaN too
            raise ValueError(
                f"max_retry_after={self.max_retry_after} must be >= 0 seconds (math.inf: no cap)"
            )

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): the backoff, or the server's
        ``retry_after`` (at most ``max_retry_after``) when that is longer."""
        backoff = min(self.max_delay, self.initial_delay * 2.0**attempt)
        backoff *= 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_retry_after))
        return max(0.0, backoff)


class RetryableError(Exception):
    """A failure worth retrying (timeout, connection error, 429, 5xx), with the server's ``Retry-After``.

    Examples:
        >>> RetryableError("HTTP 429", retry_after=2.0).retry_after
        2.0
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent or unreadable.

    Examples:
        >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
        (3.0, None, None)
        >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
        6.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        seconds = moment - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None  # NaN, inf -> None


def call_with_retries(
    function: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, RetryableError, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``function``; on :class:`RetryableError` wait and call again, up to ``policy.max_retries`` times.

    Any other exception propagates at once; after the last retry the last ``RetryableError`` propagates.
    ``on_retry(attempt, error, delay)`` is called before each wait. A ``Retry-After`` longer than
    ``policy.max_retry_after`` is capped, with a warning naming both.

    Examples:
        >>> attempts = []
        >>> def flaky():
        ...     attempts.append(1)
        ...     if len(attempts) < 3:
        ...         raise RetryableError("HTTP 503")
        ...     return "ok"
        >>> call_with_retries(flaky, RetryPolicy(), sleep=lambda seconds: None), len(attempts)
        ('ok', 3)
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return function()
        except RetryableError as error:
            if attempt >= policy.max_retries:
                raise
            delay = policy.delay(attempt, error.retry_after, rng)
            if error.retry_after is not None and delay < error.retry_after:
                logger.warning(
                    "%s: its Retry-After of %.0f s is above max_retry_after=%.0f s; waiting %.2f s instead "
                    "(raise max_retry_after to wait as long as the server asks)",
                    error,
                    error.retry_after,
                    policy.max_retry_after,
                    delay,
                )
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
            attempt += 1
