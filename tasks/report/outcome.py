"""How a finished run ends: all rows fine, some failed, or failed as a whole.

A run whose rows failed must not look like a clean run in the UI or to an automation; how
many failures turn it Failed is the run's own choice (``RunParams.fail_when``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tasks.ledger.jobs import Status

# Rows that count as failures: they did not produce (or reuse) an output. Cancelled rows are
# not: a cancelled run ends Cancelled whatever its rows.
FAILURE_STATUSES = (
    Status.failed,
    Status.failed_verification,
    Status.invalid,
    Status.skipped_budget,
)
WITH_FAILURES = "Completed with failures"  # the Completed state's name when rows failed


class RunOutcome(StrEnum):
    ok = "ok"  # every row succeeded or was reused
    failures = "failures"  # some rows failed, within the run's tolerance: Completed with failures
    failed = "failed"  # past the tolerance, or nothing succeeded: Failed


@dataclass(frozen=True)
class Verdict:
    """The outcome of a run and the one line that says why (a Prefect state's message)."""

    outcome: RunOutcome
    failed_rows: int
    rows: int
    message: str


def failed_count(counts: dict[str, int]) -> int:
    return sum(counts.get(s.value, 0) for s in FAILURE_STATUSES)


def describe(counts: dict[str, int], rows: int, cost_usd: float) -> str:
    """'2 of 10 rows failed (1 failed, 1 invalid); cost $0.0440'."""
    failed = failed_count(counts)
    parts = ", ".join(
        f"{counts[s.value]} {s.value}" for s in FAILURE_STATUSES if counts.get(s.value)
    )
    head = f"{failed} of {rows} rows failed" + (f" ({parts})" if parts else "")
    return f"{head}; cost ${cost_usd:.4f}"


def judge(
    counts: dict[str, int],
    rows: int,
    cost_usd: float,
    *,
    failed_rows_over: int | None = None,
    failed_percent_over: float | None = None,
) -> Verdict:
    """Failed when more than ``failed_rows_over`` rows, or more than ``failed_percent_over``
    percent of them, failed, or when no row succeeded; Completed with failures when some
    failed short of that; ok when none did."""
    failed = failed_count(counts)
    message = describe(counts, rows, cost_usd)
    if failed == 0:
        return Verdict(RunOutcome.ok, 0, rows, message)
    over_rows = failed_rows_over is not None and failed > failed_rows_over
    percent = 100.0 * failed / rows if rows else 100.0
    over_percent = failed_percent_over is not None and percent > failed_percent_over
    ok_rows = counts.get(Status.succeeded.value, 0) + counts.get(Status.skipped.value, 0)
    if over_rows or over_percent or ok_rows == 0:
        return Verdict(RunOutcome.failed, failed, rows, message)
    return Verdict(RunOutcome.failures, failed, rows, message)


def run_finished_payload(summary: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """The payload of the ``matteflow.run.finished`` event: counts, cost and where to look."""
    totals = summary.get("totals") or {}
    files = summary.get("files") or {}
    return {
        "run_name": (summary.get("params") or {}).get("run_name"),
        "outcome": verdict.outcome.value,
        "message": verdict.message,
        "rows": summary.get("rows", verdict.rows),
        "failed_rows": verdict.failed_rows,
        "counts": summary.get("counts", {}),
        "cost_usd": totals.get("cost_usd", 0.0),
        "estimated_cost_usd": totals.get("estimated_cost_usd", 0.0),
        "report_url": summary.get("report_url"),
        "gallery_url": files.get("gallery.html"),
    }
