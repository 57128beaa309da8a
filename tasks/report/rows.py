"""The rows of a finished run: jobs that ran, rows refused at planning, and repeated rows."""

from __future__ import annotations

from tasks.ledger.results import ResultRow
from tasks.manifest.plan import Plan
from tasks.manifest.read import Manifest


def duplicate_rows(plan: Plan, manifest: Manifest, by_key: dict[str, ResultRow]) -> list[ResultRow]:
    """Rows that repeat a job share its outcome; the cost is counted once, on the first row."""
    rows = {r.row: r for r in manifest.rows}
    out = []
    for number, key in plan.duplicates.items():
        first = by_key[key]
        update = dict(
            row=number,
            id=rows[number].id,
            duplicate_of=first.row,
            cost_usd=0.0,
            estimated_cost_usd=0.0,
        )
        out.append(first.model_copy(update=update))
    return out


def run_rows(plan: Plan, manifest: Manifest, done: list[ResultRow]) -> list[ResultRow]:
    """Every manifest row once: the jobs' rows, the invalid rows, then the repeats of jobs."""
    by_key = {row.job_key: row for row in done if row.job_key}
    return [*done, *plan.invalid, *duplicate_rows(plan, manifest, by_key)]
