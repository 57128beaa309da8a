"""Reusing a succeeded job: both runners (local engine and fal) ask the ledger the same way."""

from __future__ import annotations

from tasks.ledger.jobs import JobState, LedgerEntry
from tasks.storage.store import Storage


def reusable(entry: LedgerEntry | None, storage: Storage) -> bool:
    """A finished job is reused when its stored output is still there at its recorded size."""
    if entry is None or entry.state is not JobState.succeeded or not entry.output_path:
        return False
    return entry.bytes is not None and storage.size(entry.output_path) == entry.bytes
