"""Capped exponential backoff with full jitter, honouring Retry-After.

`retry_call(fn, policy)` calls `fn` until it succeeds, the error is not
retryable, attempts run out or the deadline passes (then the last error is
raised). An error is retryable when `is_retryable(exc)` says so; it may carry a
`retry_after_s` attribute (from an HTTP Retry-After header), which then sets the
wait instead of the backoff (bounded by `policy.retry_after_max_s` and the deadline).
Setting `stop` ends a wait at once, and the last error is raised as `Interrupted`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """A retry wait was cut short by the stop event (SIGTERM); the cause is the last error."""


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.2
    cap_s: float = 30.0
    max_attempts: int = 0  # 0 = unlimited, bounded by deadline_s
    deadline_s: float = 600.0
    retry_after_max_s: float = 300.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={self.base_s}, cap_s={self.cap_s}")
        if self.max_attempts < 0 or self.deadline_s <= 0:
            raise ValueError(
                f"bad retry limits: max_attempts={self.max_attempts}, deadline_s={self.deadline_s}"
            )

    def delay_s(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Wait before retry number `attempt` (1-based)."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.retry_after_max_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool],
    *,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], object] | None = None,
    rng: random.Random | None = None,
    stop: threading.Event | None = None,
) -> T:
    """Call `fn` with retries; `on_retry(exc, attempt, delay_s)` is told before each wait."""
    rng = rng or random.Random()
    stop = stop or threading.Event()
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if not is_retryable(exc):
                raise
            if policy.max_attempts and attempt >= policy.max_attempts:
                raise
            retry_after = getattr(exc, "retry_after_s", None)
            delay = policy.delay_s(attempt, rng, retry_after)
            if time.monotonic() - start + delay > policy.deadline_s:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            if sleep is not None:
                sleep(delay)
            elif stop.wait(delay):
                raise Interrupted(f"stopped while waiting to retry after: {exc}") from exc
