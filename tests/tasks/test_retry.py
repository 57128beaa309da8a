"""The storage retry policy: pure delays, and the loop that applies them (no sleeping)."""

from __future__ import annotations

import random

import pytest

from tasks.retry import Backoff, backoff_delay, call_with_backoff
from tasks.storage.store import transient_storage_error


def test_delays_double_up_to_the_cap_within_jitter() -> None:
    policy = Backoff(attempts=6, base_delay_s=0.5, max_delay_s=3.0, jitter=0.25)
    rng = random.Random(1)
    for attempt, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (5, 3.0)]:
        delay = backoff_delay(attempt, policy, rng)
        assert nominal * 0.75 <= delay <= nominal * 1.25
    assert policy.worst_case_wait_s == pytest.approx((0.5 + 1 + 2 + 3 + 3) * 1.25)


def test_transient_errors_are_retried_until_success() -> None:
    calls, slept = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    got = call_with_backoff(
        flaky, Backoff(attempts=5), transient=transient_storage_error, sleep=slept.append
    )
    assert got == "ok" and len(calls) == 3 and len(slept) == 2


def test_gives_up_after_the_last_attempt_and_never_retries_permanent_errors() -> None:
    slept: list[float] = []

    def down() -> None:
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):
        call_with_backoff(
            down, Backoff(attempts=3), transient=transient_storage_error, sleep=slept.append
        )
    assert len(slept) == 2

    def missing() -> None:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        call_with_backoff(
            missing, Backoff(attempts=3), transient=transient_storage_error, sleep=slept.append
        )
    assert len(slept) == 2  # no new sleeps: a missing key is not worth a second look


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Backoff(attempts=0)
