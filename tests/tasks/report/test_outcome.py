"""How a run ends, decided from its counts alone."""

from __future__ import annotations

import pytest

from tasks.report.outcome import RunOutcome, judge


def counts(**given: int) -> dict[str, int]:
    base = dict.fromkeys(
        ["succeeded", "skipped", "invalid", "failed", "failed_verification", "skipped_budget"], 0
    )
    return base | given


@pytest.mark.parametrize(
    ("given", "rows_over", "percent_over", "outcome"),
    [
        (counts(succeeded=9, skipped=1), None, None, RunOutcome.ok),
        (counts(succeeded=9, failed=1), None, None, RunOutcome.failures),
        (counts(succeeded=9, invalid=1), 0, None, RunOutcome.failed),
        (counts(succeeded=8, failed=2), 2, None, RunOutcome.failures),
        (counts(succeeded=7, failed=3), 2, None, RunOutcome.failed),
        (counts(succeeded=8, failed_verification=2), None, 20.0, RunOutcome.failures),
        (counts(succeeded=7, skipped_budget=3), None, 20.0, RunOutcome.failed),
        (counts(failed=1, invalid=1), None, None, RunOutcome.failed),  # nothing succeeded
        (counts(skipped=1, failed=1), None, None, RunOutcome.failures),  # reused counts as done
    ],
)
def test_outcome_follows_the_thresholds(
    given: dict[str, int], rows_over: int | None, percent_over: float | None, outcome: RunOutcome
) -> None:
    rows = sum(given.values())
    verdict = judge(given, rows, 0.5, failed_rows_over=rows_over, failed_percent_over=percent_over)
    assert verdict.outcome is outcome


def test_message_counts_each_kind_of_failure() -> None:
    verdict = judge(counts(succeeded=7, failed=2, invalid=1), 10, 0.044)
    assert verdict.message == "3 of 10 rows failed (2 failed, 1 invalid); cost $0.0440"
    assert verdict.failed_rows == 3
