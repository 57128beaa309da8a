"""The results row: one schema whatever the rows, one constructor for jobs that never ran."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.errors import ErrorCode
from tasks.ledger.jobs import LedgerEntry, Status, now_iso
from tasks.ledger.results import RESULT_SCHEMA, ResultRow, ended_row, rows_from_table
from tasks.manifest.read import ManifestRow
from tasks.report.tables import write_reports
from tasks.storage.store import Storage
from tests.fakes.jobs import row_job


def invalid_rows() -> list[ResultRow]:
    rows = [ManifestRow(row=n, id=f"v{n}", video_url="ftp://x/v.mp4") for n in (1, 2)]
    return [
        ended_row(r, Status.invalid, ErrorCode.unsupported_scheme, "ftp", endpoint="local")
        for r in rows
    ]


def mixed_rows() -> list[ResultRow]:
    done = ResultRow(
        row=3,
        id="v3",
        job_key="k3",
        endpoint="local",
        status=Status.succeeded,
        attempts=1,
        frames=25,
        width=64,
        height=48,
        fps=25.0,
        duration_s=1.0,
        has_alpha=True,
        verified=True,
        bytes=1234,
        started_at=now_iso(),
        finished_at=now_iso(),
        elapsed_s=0.5,
        fg_fraction=0.4,
        flicker=0.01,
        verify_reasons="",
    )
    return [
        *invalid_rows(),
        done,
        ended_row(row_job(4), Status.cancelled, ErrorCode.cancelled, "x"),
    ]


def parquet_schema(storage: Storage, run: str, rows: list[ResultRow]) -> pa.Schema:
    write_reports(storage, run, rows, {}, {})
    data = storage.read_bytes(f"runs/{run}/results.parquet")
    assert data is not None
    return pq.read_table(io.BytesIO(data)).schema


def test_all_invalid_and_mixed_runs_write_the_same_parquet_schema(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    invalid = parquet_schema(storage, "invalid", invalid_rows())
    mixed = parquet_schema(storage, "mixed", mixed_rows())
    assert invalid.remove_metadata().equals(mixed.remove_metadata())
    assert invalid.remove_metadata().equals(RESULT_SCHEMA)
    types = {f.name: f.type for f in invalid}
    assert types["frames"] == types["bytes"] == types["attempts"] == pa.int64()
    assert types["finished_at"] == pa.timestamp("us", tz="UTC")
    assert types["verified"] == types["has_alpha"] == pa.bool_()
    assert types["duration_s"] == pa.float64() and types["error_code"] == pa.string()


def test_csv_keeps_integers_integral(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    write_reports(storage, "mixed", mixed_rows(), {}, {})
    lines = (tmp_path / "runs" / "mixed" / "results.csv").read_text().splitlines()
    frame = pd.read_csv(io.StringIO("\n".join(lines)))
    assert frame.loc[frame["row"] == 3, "frames"].item() == 25
    assert ",25,64,48,25.0," in lines[3]  # frames, width, height: integers; fps: a float


def test_rows_read_back_from_parquet_equal_the_rows_written(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    rows = mixed_rows()
    write_reports(storage, "back", rows, {}, {})
    data = storage.read_bytes("runs/back/results.parquet")
    assert data is not None
    assert rows_from_table(pq.read_table(io.BytesIO(data))) == sorted(rows, key=lambda r: r.row)


def test_a_row_holds_one_registered_code_and_knows_its_columns() -> None:
    with pytest.raises(ValueError):
        ResultRow(row=1, status=Status.failed, error_code="alpha_missing,matte_full")
    with pytest.raises(KeyError):
        ResultRow(row=1, status=Status.failed, colour="red")
    row = ended_row(row_job(1), Status.failed, ErrorCode.internal_error, "x" * 900)
    assert len(row.error or "") == 500 and row["job_key"] == "k1" and row.attempts == 0
    assert row.finished_at is not None and row.finished_at.tzinfo is not None


def test_old_ledger_entries_load_with_typed_fal_handles() -> None:
    old = {
        "key": "k",
        "state": "submitted",
        "endpoint": "pixelcut",
        "video_url": "https://x/v.mp4",
        "params": {},
        "request_id": "r1",
        "error_code": "alpha_missing,matte_full",
        "metrics": {
            "input": {"frames": 8},
            "fal": {
                "app": "pixelcut/video-background-removal",
                "submission": {
                    "request_id": "r1",
                    "status_url": "https://q/s",
                    "response_url": "https://q/r",
                    "cancel_url": "https://q/c",
                },
                "metrics": {"inference_time": 1.5},
                "outputs": {"video": {"url": "https://cdn/o.webm", "file_size": 10}},
            },
        },
    }
    entry = LedgerEntry.model_validate(old)
    assert entry.fal is not None and entry.fal.submission is not None
    assert entry.fal.submission.request_id == "r1" and entry.fal.submission.submitted_at is None
    assert entry.fal.metrics == {"inference_time": 1.5}
    assert entry.fal.result and entry.fal.result.video and entry.fal.result.video.file_size == 10
    assert entry.metrics == {"input": {"frames": 8}}  # the old nest is gone, the rest stays
    assert entry.error_code is ErrorCode.alpha_missing
    assert "fal" in old["metrics"]  # the stored dict is not changed under the caller
    again = LedgerEntry.model_validate(entry.model_dump(mode="json"))
    assert again == entry
