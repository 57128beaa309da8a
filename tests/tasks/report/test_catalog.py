"""The catalog table: latest outcome per video, after successive and overlapping runs."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tasks.ledger.jobs import Status
from tasks.ledger.results import RESULT_SCHEMA, ResultRow
from tasks.report.catalog import (
    CATALOG_SCHEMA,
    LATEST,
    held_parts,
    list_parts,
    update_catalog,
)
from tasks.storage.store import Storage

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def row(n: int, vid: str, status: Status, run: str, minutes: int, **extra: Any) -> ResultRow:
    values: dict[str, Any] = {"video_url": f"https://e.com/{vid}.mp4?sig=secret"} | extra
    return ResultRow(
        row=n,
        id=vid,
        status=status,
        run_name=run,
        finished_at=T0 + timedelta(minutes=minutes),
        **values,
    )


def latest(storage: Storage) -> dict[str, dict[str, Any]]:
    data = storage.read_bytes(LATEST)
    assert data is not None
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.remove_metadata() == CATALOG_SCHEMA
    assert table.schema.names[: len(RESULT_SCHEMA)] == RESULT_SCHEMA.names
    records = table.to_pylist()
    keys = [r["video_key"] for r in records]
    assert len(keys) == len(set(keys)), "one row per video"
    return {r["video_key"]: r for r in records}


def test_two_successive_runs_keep_the_latest_outcome_and_the_history(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    first = [row(1, "a", Status.failed, "night1", 1), row(2, "b", Status.succeeded, "night1", 2)]
    part1 = update_catalog(storage, "night1", first, ids_given={1, 2})
    before = storage.read_bytes(part1)
    second = [
        row(1, "a", Status.succeeded, "night2", 60),
        row(2, "c", Status.invalid, "night2", 61),
    ]
    update_catalog(storage, "night2", second, ids_given={1, 2})
    rows = latest(storage)
    assert {k: (r["status"], r["run_name"]) for k, r in rows.items()} == {
        "a": ("succeeded", "night2"),
        "b": ("succeeded", "night1"),
        "c": ("invalid", "night2"),
    }
    assert rows["a"]["video_url"] == "https://e.com/a.mp4"  # redacted, as in results
    assert storage.read_bytes(part1) == before  # history is never rewritten
    assert len(list_parts(storage)) == 2


def test_rows_without_an_id_are_keyed_by_their_input_url(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    update_catalog(storage, "r1", [row(1, "1", Status.failed, "r1", 1)], ids_given=set())
    update_catalog(storage, "r2", [row(1, "1", Status.succeeded, "r2", 2)], ids_given=set())
    update_catalog(
        storage, "r3", [row(1, "1", Status.failed, "r3", 3, video_url="/v/x.mp4")], set()
    )
    rows = latest(storage)
    assert set(rows) == {"https://e.com/1.mp4", "/v/x.mp4"}
    assert rows["https://e.com/1.mp4"]["status"] == "succeeded"


class RacingStorage(Storage):
    """Storage where another run closes between this run's fold and its write of latest."""

    def __init__(self, root: str, other: list[ResultRow]) -> None:
        super().__init__(root)
        self.other = other
        self.latest_writes = 0

    def write_bytes(self, rel: str, data: bytes) -> None:
        if rel == LATEST:
            self.latest_writes += 1
            if self.latest_writes == 1:  # run B closes completely while A is about to write
                update_catalog(Storage(self.root_url), "runB", self.other, {1})
        super().write_bytes(rel, data)


def test_two_overlapping_runs_lose_neither_runs_rows(tmp_path: Path) -> None:
    b_rows = [row(1, "b", Status.succeeded, "runB", 5)]
    storage = RacingStorage(str(tmp_path / "out"), b_rows)
    a_rows = [row(1, "a", Status.failed, "runA", 4)]
    update_catalog(storage, "runA", a_rows, {1})
    # A's first write was stale (it folded before B's part existed) and overwrote B's latest;
    # A saw B's part missing from latest and folded again.
    assert storage.latest_writes >= 2
    assert set(latest(storage)) == {"a", "b"}
    data = storage.read_bytes(LATEST)
    assert data is not None
    assert sorted(held_parts(pq.read_table(io.BytesIO(data)))) == sorted(list_parts(storage))
