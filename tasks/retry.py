"""The one backoff policy and the one retry loop: storage calls, fal API calls, input probes.

The policy is an object the caller passes in; the delay is a pure function of it; whether an
error is worth another attempt is the caller's pure decision (``transient``). The loop that
applies them is tenacity's, configured here once, run sync (storage, in worker threads) or async
(fal, probes) with the same stop, wait and retry rules.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

T = TypeVar("T")
Transient = Callable[[BaseException], bool]
# Called before each sleep: (failed attempt number, its error, seconds about to be slept).
OnRetry = Callable[[int, BaseException, float], None]
# A server's own wait for an error (HTTP Retry-After), or None to back off as usual.
RetryAfter = Callable[[BaseException], float | None]


@dataclass(frozen=True)
class Backoff:
    """How often and how patiently a call is repeated before it fails for good."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.25  # +/- fraction of each delay
    max_retry_after_s: float = 120.0  # a server's Retry-After is honoured up to this

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


def backoff_delay(
    attempt: int, policy: Backoff, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to sleep after failed attempt ``attempt`` (1-based): the server's Retry-After if
    it gave one (capped), else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after_s)
    delay = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** (attempt - 1))
    return max(0.0, delay * (1 + policy.jitter * rng.uniform(-1.0, 1.0)))


def _rules(
    policy: Backoff,
    transient: Transient,
    rng: random.Random | None,
    on_retry: OnRetry | None,
    retry_after: RetryAfter | None,
) -> dict[str, Any]:
    """tenacity's stop, wait and retry rules for ``policy``: the same for sync and async."""
    chosen = rng or random.Random()

    def error_of(state: RetryCallState) -> BaseException:
        assert state.outcome is not None
        exc = state.outcome.exception()
        assert exc is not None  # only failures are retried
        return exc

    def wait(state: RetryCallState) -> float:
        hint = retry_after(error_of(state)) if retry_after is not None else None
        return backoff_delay(state.attempt_number, policy, chosen, hint)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            delay = state.next_action.sleep if state.next_action else 0.0
            on_retry(state.attempt_number, error_of(state), delay)

    return dict(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and transient(exc)),
        before_sleep=before_sleep,
        reraise=True,  # the last error itself escapes, not tenacity's RetryError
    )


def call_with_backoff(
    fn: Callable[[], T],
    policy: Backoff,
    *,
    transient: Transient,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
    retry_after: RetryAfter | None = None,
) -> T:
    """Call ``fn`` until it succeeds, raises a non-transient error, or attempts run out."""
    loop = Retrying(sleep=sleep, **_rules(policy, transient, rng, on_retry, retry_after))
    return loop(fn)


async def acall_with_backoff(
    fn: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    transient: Transient,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
    retry_after: RetryAfter | None = None,
) -> T:
    """``call_with_backoff`` for a coroutine function, sleeping with ``sleep`` (awaited)."""
    loop = AsyncRetrying(sleep=sleep, **_rules(policy, transient, rng, on_retry, retry_after))
    return await loop(fn)
