"""Sharding: pure splitting/merging, and one in-process sharded run on the local engine."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.params import RunParams
from flows.shards import (
    Shard,
    budget_shares,
    child_params,
    collect,
    read_shard_rows,
    remap_rows,
    split_jobs,
    write_shards,
)
from tasks.endpoints import EndpointName, endpoint_info
from tasks.ledger.results import ResultRow
from tasks.manifest.plan import plan_jobs
from tasks.manifest.read import read_manifest
from tasks.report.tables import write_reports
from tasks.storage.store import Storage
from tests.fakes.jobs import row_job


def test_split_jobs_keeps_order_and_sizes() -> None:
    parts = split_jobs([row_job(r) for r in (2, 5, 7, 9, 11)], 2)
    assert [[j.row for j in p] for p in parts] == [[2, 5], [7, 9], [11]]
    with pytest.raises(ValueError):
        split_jobs([row_job(1)], 0)


def test_budget_shares_follow_estimates_and_never_exceed_budget() -> None:
    parts = [[row_job(1, 0.3), row_job(2, 0.3)], [row_job(3, 0.4)]]
    shares = budget_shares(1.0, parts)
    assert shares == [pytest.approx(0.6), pytest.approx(0.4)]
    singles = [[row_job(n)] for n in (1, 2, 3)]
    assert sum(s or 0 for s in budget_shares(1.0, singles)) <= 1.0
    assert budget_shares(None, parts) == [None, None]


def test_remap_rows_gives_manifest_numbers() -> None:
    shard = Shard(index=1, run_name="r/shards/001", manifest="m", jobs=[row_job(4), row_job(9)])
    rows = [
        ResultRow(row=2, status="succeeded", duplicate_of=None),
        ResultRow(row=1, status="succeeded", duplicate_of=2),
    ]
    remapped = [{"row": r.row, "duplicate_of": r.duplicate_of} for r in remap_rows(shard, rows)]
    assert remapped == [
        {"row": 9, "duplicate_of": None},
        {"row": 4, "duplicate_of": 9},
    ]


def test_stale_or_missing_child_results_become_failed_rows() -> None:
    storage = Storage("memory://shards-stale")
    shard = Shard(index=1, run_name="r/shards/001", manifest="m", jobs=[row_job(3), row_job(4)])
    assert read_shard_rows(storage, shard) is None
    other = [ResultRow(row=1, job_key="other", status="succeeded", endpoint="local")]
    write_reports(storage, shard.run_name, other, {}, {})
    outcome = collect(storage, shard, "Completed")
    assert [r["row"] for r in outcome.rows] == [3, 4]
    assert {r["error_code"] for r in outcome.rows} == {"shard_failed"}
    crashed = collect(storage, shard, "Crashed", message="worker died")
    assert "ended Crashed: worker died" in crashed.rows[0]["error"]


def test_write_shards_keeps_ids_and_overrides(tmp_path: Path) -> None:
    manifest_path = tmp_path / "m.csv"
    with manifest_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "video_url", "background"])
        w.writerows([["a", "/v/a.mp4", "white"], ["", "/v/b.mp4", ""], ["c", "/v/c.mp4", ""]])
    info = endpoint_info(EndpointName.local)
    manifest = read_manifest(str(manifest_path), info.option_fields)
    plan = plan_jobs(manifest, info, {})
    storage = Storage(str(tmp_path / "out"))
    shards = write_shards(storage, "run1", manifest, plan, 2, budget_usd=None)
    assert [s.rows for s in shards] == [[1, 2], [3]]
    first = storage.read_bytes("runs/run1/shards/001.jsonl")
    assert first is not None
    lines = [json.loads(x) for x in first.decode().splitlines()]
    assert lines == [
        {"background": "white", "id": "a", "video_url": "/v/a.mp4"},
        {"id": "2", "video_url": "/v/b.mp4"},
    ]
    # The child plans its shard into the very same jobs (same keys, hence the same ledger).
    child = read_manifest(shards[0].manifest, info.option_fields)
    assert [j.key for j in plan_jobs(child, info, {}).jobs] == [j.key for j in shards[0].jobs]
    params = child_params(RunParams(manifest="x.csv", shard_size=2, budget_usd=1.0), shards[1])
    assert (params.run_name, params.shard_size, params.manifest) == (
        "run1/shards/002",
        None,
        shards[1].manifest,
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
async def test_in_process_shards_merge_into_one_report(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """No deployment: shards run as subflows here, and the merged report matches the manifest."""
    from flows.removal import remove_backgrounds

    person = str(clips["person"])
    rows: list[dict[str, Any]] = [
        {"id": "p-green", "video_url": person, "background": "green", "output_format": "mp4_h264"},
        {"id": "bad", "video_url": "ftp://x/y.mp4", "background": "", "output_format": ""},
        {"id": "p-white", "video_url": person, "background": "white", "output_format": "mp4_h264"},
        {
            "id": "p-green-again",
            "video_url": person,
            "background": "green",
            "output_format": "mp4_h264",
        },
        {"id": "p-black", "video_url": person, "background": "black", "output_format": "mp4_h264"},
    ]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    values: dict[str, Any] = {"manifest": str(manifest), "output": str(out), "run_name": "sharded"}
    if "allow_local_inputs" in RunParams.model_fields:  # main's policy: local files on request
        values["allow_local_inputs"] = True
    params = RunParams.model_validate({**values, "shard_size": 2})
    summary = await remove_backgrounds(params)

    assert [s["state"] for s in summary["shards"]] == ["Completed", "Completed"]
    assert [s["jobs"] for s in summary["shards"]] == [2, 1]
    results = pd.read_csv(out / "runs/sharded/results.csv")
    assert list(results["row"]) == [1, 2, 3, 4, 5]
    assert list(results["id"]) == [r["id"] for r in rows]
    assert list(results["status"]) == [
        "succeeded",
        "invalid",
        "succeeded",
        "succeeded",
        "succeeded",
    ]
    assert results.loc[3, "duplicate_of"] == 1
    assert summary["counts"]["succeeded"] == 4 and summary["counts"]["invalid"] == 1
    assert (out / "runs/sharded/shards/001.jsonl").exists()
    assert (out / "runs/sharded/shards/002/results.parquet").exists()
    on_disk = json.loads((out / "runs/sharded/summary.json").read_text())
    assert len(on_disk["shards"]) == 2 and on_disk["rows"] == 5
