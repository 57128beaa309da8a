"""Reports: the cost report of a mixed run adds up to its results table."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.ledger.jobs import Status
from tasks.ledger.results import RESULT_COLUMNS, ResultRow, verification_columns
from tasks.report.tables import (
    artifact_rows,
    cost_table,
    failures_by_reason,
    results_frame,
    write_reports,
)
from tasks.storage.store import Storage
from tests.fakes.seaweed import SeaweedS3

DESIGN_COLUMNS = [
    "row",
    "id",
    "video_url",
    "job_key",
    "endpoint",
    "status",
    "error_code",
    "error",
    "request_id",
    "attempts",
    "output_url",
    "mask_url",
    "output_format",
    "frames",
    "width",
    "height",
    "fps",
    "duration_s",
    "has_alpha",
    "verified",
    "bytes",
    "sha256",
    "estimated_cost_usd",
    "cost_usd",
    "started_at",
    "finished_at",
    "elapsed_s",
]
FIGURES = ["jobs", "frames", "video_minutes", "estimated_cost_usd", "cost_usd"]


def mixed_rows() -> list[ResultRow]:
    """Every status the flow can write, on two endpoints, with costs where they arise."""

    def row(n: int, endpoint: str, status: Status, **kw: Any) -> ResultRow:
        return ResultRow(
            row=n,
            id=f"v{n}",
            video_url=f"https://cdn.example/v{n}.mp4?sig=SECRET",
            endpoint=endpoint,
            status=status,
            **kw,
        )

    ok = dict(frames=300, duration_s=10.0, verified=True)
    return [
        row(0, "pixelcut", Status.succeeded, cost_usd=0.22, estimated_cost_usd=0.22, **ok),
        row(1, "pixelcut", Status.succeeded, cost_usd=0.22, estimated_cost_usd=0.22, **ok),
        row(2, "pixelcut", Status.skipped, cost_usd=0.0, **ok),
        row(
            3,
            "pixelcut",
            Status.failed,
            error_code="endpoint_error",
            error="500 from fal",
            estimated_cost_usd=0.22,
            cost_usd=0.0,
        ),
        row(
            4,
            "pixelcut",
            Status.failed_verification,
            error_code="alpha_missing",
            verify_reasons="alpha_missing,matte_full",
            error="opaque; nothing removed",
            frames=299,
            duration_s=9.97,
            cost_usd=0.22,
            estimated_cost_usd=0.22,
            verified=False,
        ),
        row(
            5,
            "pixelcut",
            Status.skipped_budget,
            error_code="budget_exceeded",
            error="over budget",
            estimated_cost_usd=0.44,
        ),
        row(6, "pixelcut", Status.invalid, error_code="invalid_options", error="bad colour"),
        row(
            7,
            "birefnet",
            Status.succeeded,
            cost_usd=0.0333,
            estimated_cost_usd=0.04,
            frames=600,
            duration_s=20.0,
            verified=True,
        ),
        row(
            8,
            "birefnet",
            Status.failed_verification,
            error_code="matte_full",
            error="nothing removed",
            cost_usd=0.03,
            frames=60,
            duration_s=2.0,
        ),
        row(9, "birefnet", Status.cancelled, error_code="cancelled", error="run cancelled"),
        row(10, "local", Status.succeeded, frames=25, duration_s=1.0, verified=True),
    ]


def assert_cost_report_adds_up(folder: Path, budget: float | None) -> pd.DataFrame:
    """Totals equal the results table's sums; every breakdown sums to the totals."""
    results = pd.read_csv(folder / "results.csv")
    table = pd.read_csv(folder / "cost_report.csv")
    total = table[table["group"] == "total"].iloc[0]
    assert total["jobs"] == len(results)
    assert total["frames"] == results["frames"].fillna(0).sum()
    assert total["video_minutes"] == pytest.approx(
        results["duration_s"].fillna(0).sum() / 60, abs=1e-4
    )
    assert total["cost_usd"] == pytest.approx(results["cost_usd"].sum(), abs=1e-6)
    assert total["estimated_cost_usd"] == pytest.approx(
        results["estimated_cost_usd"].sum(), abs=1e-6
    )
    for group in ("endpoint_status", "endpoint", "status"):
        part = table[table["group"] == group]
        for col in FIGURES:
            assert part[col].sum() == pytest.approx(total[col], abs=1e-3), (group, col)
    for status, n in results["status"].value_counts().items():
        assert table[(table["group"] == "status") & (table["status"] == status)]["jobs"].item() == n
    if budget is None:
        assert pd.isna(total["budget_usd"])
    else:
        assert total["budget_left_usd"] == pytest.approx(budget - results["cost_usd"].sum())
    summary = json.loads((folder / "summary.json").read_text())
    assert sum(summary["counts"].values()) == summary["rows"] == len(results)
    assert summary["totals"]["cost_usd"] == pytest.approx(total["cost_usd"])
    assert summary["totals"]["frames"] == total["frames"]
    return table


def test_cost_report_of_a_mixed_run_adds_up(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    info = write_reports(storage, "mixed", mixed_rows(), {"endpoint": "pixelcut"}, {}, 2.0)
    folder = tmp_path / "runs" / "mixed"
    table = assert_cost_report_adds_up(folder, 2.0)
    total = table[table["group"] == "total"].iloc[0]
    assert total["cost_usd"] == pytest.approx(0.7233)
    assert total["budget_left_usd"] == pytest.approx(2.0 - 0.7233)
    by_endpoint = table[table["group"] == "endpoint"].set_index("endpoint")
    assert by_endpoint.loc["pixelcut", "jobs"] == 7
    assert by_endpoint.loc["pixelcut", "cost_usd"] == pytest.approx(0.66)
    # 0.66 USD over 4 + 1.5 ... minutes of pixelcut video.
    minutes = (10 + 10 + 10 + 9.97) / 60
    assert by_endpoint.loc["pixelcut", "usd_per_video_minute"] == pytest.approx(
        0.66 / minutes, rel=1e-3
    )
    assert info["counts"]["skipped_budget"] == 1 and info["budget"][
        "remaining_usd"
    ] == pytest.approx(1.2767)
    assert info["verification"]["reasons"] == {"matte_full": 2, "alpha_missing": 1}
    assert set(info["files"]) == {
        "results.parquet",
        "results.csv",
        "cost_report.csv",
        "cost_report.md",
        "summary.json",
    }
    assert all(Path(u.removeprefix("file://")).is_file() for u in info["files"].values())
    parquet = pd.read_parquet(folder / "results.parquet")
    assert list(parquet.columns) == RESULT_COLUMNS and len(parquet) == 11
    md = (folder / "cost_report.md").read_text()
    for heading in (
        "## Total",
        "## Budget",
        "## By endpoint",
        "## By status",
        "## Failures by reason",
    ):
        assert heading in md
    assert "SECRET" not in (folder / "results.csv").read_text() + md


def test_results_keep_the_design_columns_first() -> None:
    assert RESULT_COLUMNS[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS
    assert {"fg_fraction", "flicker", "verify_reasons"} <= set(RESULT_COLUMNS)
    with pytest.raises(KeyError):
        ResultRow(row=1, colour="red")


def test_failures_are_grouped_by_each_reason() -> None:
    failures = failures_by_reason(results_frame(mixed_rows()))
    counts = {(r.status, r.reason): r.count for r in failures.itertuples()}
    assert counts == {
        ("failed", "endpoint_error"): 1,
        ("failed_verification", "alpha_missing"): 1,
        ("failed_verification", "matte_full"): 2,
        ("skipped_budget", "budget_exceeded"): 1,
        ("invalid", "invalid_options"): 1,
        ("cancelled", "cancelled"): 1,
    }
    examples = dict(zip(failures["reason"], failures["example"], strict=True))
    assert examples["alpha_missing"] == "opaque"  # the text that goes with that code


def test_cost_table_without_budget_and_empty_results() -> None:
    table = cost_table(results_frame([]), None)
    total = table[table["group"] == "total"].iloc[0]
    assert total["jobs"] == 0 and total["cost_usd"] == 0.0 and total["usd_per_video_minute"] == 0.0


def test_artifact_rows_are_capped_and_show_problems_first() -> None:
    rows = artifact_rows(results_frame(mixed_rows()), 4)
    assert len(rows) == 4
    assert [r["status"] for r in rows] == [
        "failed",
        "failed_verification",
        "skipped_budget",
        "invalid",
    ]
    assert all(v is None or not isinstance(v, float) or v == v for r in rows for v in r.values())


def test_verification_columns_come_from_the_ledger_record() -> None:
    record = {
        "ok": False,
        "reasons": [{"code": "matte_empty", "error": "x"}, {"code": "frame_count", "error": "y"}],
        "probe": {"fg_fraction": 0.001, "flicker": 0.02},
    }
    assert verification_columns(record) == {
        "fg_fraction": 0.001,
        "flicker": 0.02,
        "verify_reasons": "matte_empty,frame_count",
    }
    assert verification_columns({}) == {
        "fg_fraction": None,
        "flicker": None,
        "verify_reasons": None,
    }


@pytest.mark.integration
def test_reports_are_written_to_s3(seaweed: SeaweedS3, s3_bucket: str) -> None:
    storage = Storage(f"{s3_bucket}/catalog", seaweed.storage_options())
    info = write_reports(storage, "on-s3", mixed_rows(), {}, {}, None)
    assert info["files"]["results.csv"] == f"{s3_bucket}/catalog/runs/on-s3/results.csv"
    for name in info["files"]:
        assert storage.exists(f"runs/on-s3/{name}"), name
    data = storage.read_bytes("runs/on-s3/cost_report.csv")
    assert data is not None
    total = pd.read_csv(io.BytesIO(data)).query("group == 'total'").iloc[0]
    assert total["cost_usd"] == pytest.approx(0.7233) and pd.isna(total["budget_usd"])


def test_summary_says_how_completions_were_seen_and_what_jobs_cost_the_client(
    tmp_path: Path,
) -> None:
    rows = mixed_rows()
    speeds = [
        ("stream", 0, 0.0, 0.05, 0.2),
        ("stream>poll", 3, 0.25, 0.07, 0.3),
        ("poll", 5, 0.125, 0.06, 0.25),
    ]
    for row, (via, polls, delay, verify_s, cpu_s) in zip(rows, speeds, strict=False):
        row.status_via, row.status_polls, row.detect_delay_s = via, polls, delay
        row.verify_s, row.cpu_s = verify_s, cpu_s
    info = write_reports(Storage(str(tmp_path)), "speed", rows, {}, {})
    speed = info["speed"]
    assert speed["status_via"] == {"stream": 1, "stream>poll": 1, "poll": 1}
    assert speed["status_polls"] == 8
    assert speed["detect_delay_s"]["jobs"] == 3 and speed["detect_delay_s"]["max"] == 0.25
    assert speed["verify_s"]["total"] == pytest.approx(0.18)
    assert speed["cpu_s"]["mean"] == pytest.approx(0.25)
    table = pd.read_parquet(tmp_path / "runs" / "speed" / "results.parquet")
    assert table["status_polls"].sum() == 8 and table["status_via"].count() == 3
