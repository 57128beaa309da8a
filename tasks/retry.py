"""Retry with exponential backoff for object-storage calls: a policy object, a pure delay
function, and the one loop that applies them.

Written by hand rather than with tenacity: the loop is a dozen lines, and the decision (which
exceptions are transient) belongs to the caller, who passes it in.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How often and how patiently a storage call is repeated before it fails for good."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.25  # +/- fraction of each delay

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    @property
    def worst_case_wait_s(self) -> float:
        """The longest the loop sleeps in total (an outage shorter than this is bridged)."""
        return sum(
            min(self.max_delay_s, self.base_delay_s * 2.0**i) * (1 + self.jitter)
            for i in range(self.attempts - 1)
        )


NO_RETRY = Backoff(attempts=1)


def backoff_delay(attempt: int, policy: Backoff, rng: random.Random) -> float:
    """Seconds to sleep after failed attempt ``attempt`` (1-based), before the next one."""
    delay = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** (attempt - 1))
    return max(0.0, delay * (1 + policy.jitter * rng.uniform(-1.0, 1.0)))


def call_with_backoff(
    fn: Callable[[], T],
    policy: Backoff,
    *,
    transient: Callable[[BaseException], bool],
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, raises a non-transient error, or attempts run out."""
    rng = rng or random.Random()
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.attempts or not transient(exc):
                raise
            delay = backoff_delay(attempt, policy, rng)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
            attempt += 1
