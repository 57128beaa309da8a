"""Reusing a succeeded job: both runners (local engine and fal) ask the ledger the same way."""

from __future__ import annotations

import time

from tasks.ledger.jobs import Job, JobState, LedgerEntry, Status, now_iso
from tasks.ledger.results import ResultRow
from tasks.storage.store import Storage


def reusable(entry: LedgerEntry | None, storage: Storage) -> bool:
    """A finished job is reused when its stored output is still there at its recorded size."""
    if entry is None or entry.state is not JobState.succeeded or not entry.output_path:
        return False
    return entry.bytes is not None and storage.size(entry.output_path) == entry.bytes


def skipped_row(job: Job, entry: LedgerEntry, started_at: str, t0: float) -> ResultRow:
    """The row of a job reused from the ledger: what it recorded, at no cost in this run."""
    elapsed_s = round(time.perf_counter() - t0, 3)
    return ResultRow.from_entry(
        job,
        entry,
        Status.skipped,
        started_at=started_at,
        finished_at=now_iso(),
        elapsed_s=elapsed_s,
    )
