"""Results table, cost report and summary: files in storage and Prefect artifacts."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from tasks.jobs import Status
from tasks.storage import Storage, redact_url

RESULT_COLUMNS = [
    "row", "id", "video_url", "job_key", "endpoint", "status", "error_code", "error",
    "request_id", "attempts", "output_url", "mask_url", "output_format", "frames", "width",
    "height", "fps", "duration_s", "has_alpha", "verified", "bytes", "sha256",
    "estimated_cost_usd", "cost_usd", "started_at", "finished_at", "elapsed_s", "duplicate_of",
]  # fmt: skip
_NUMERIC_ZERO = ("estimated_cost_usd", "cost_usd")


def result_row(**values: Any) -> dict[str, Any]:
    """A results row with every column present; URLs lose their query strings."""
    unknown = set(values) - set(RESULT_COLUMNS)
    if unknown:
        raise KeyError(f"unknown result columns: {sorted(unknown)}")
    row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
    row.update(values)
    for col in _NUMERIC_ZERO:
        row[col] = float(row[col] or 0.0)
    if isinstance(row["status"], Status):
        row["status"] = row["status"].value
    if row["video_url"]:
        row["video_url"] = redact_url(str(row["video_url"]))
    return row


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return frame.sort_values("row", kind="stable").reset_index(drop=True)


def _minutes(frame: pd.DataFrame) -> float:
    return float(pd.to_numeric(frame["duration_s"], errors="coerce").fillna(0).sum()) / 60.0


def cost_table(results: pd.DataFrame, budget_usd: float | None = None) -> pd.DataFrame:
    """Per endpoint and status: jobs, frames, video minutes, estimated and actual cost."""
    rows = []
    for (endpoint, status), part in results.groupby(["endpoint", "status"], dropna=False):
        frames = int(pd.to_numeric(part["frames"], errors="coerce").fillna(0).sum())
        minutes = _minutes(part)
        cost = float(part["cost_usd"].sum())
        rows.append(
            {
                "endpoint": endpoint,
                "status": status,
                "jobs": len(part),
                "frames": frames,
                "video_minutes": round(minutes, 3),
                "estimated_cost_usd": round(float(part["estimated_cost_usd"].sum()), 6),
                "cost_usd": round(cost, 6),
                "usd_per_video_minute": round(cost / minutes, 6) if minutes else 0.0,
            }
        )
    table = pd.DataFrame(rows)
    total_cost = float(results["cost_usd"].sum())
    total = {
        "endpoint": "TOTAL",
        "status": "",
        "jobs": len(results),
        "frames": int(pd.to_numeric(results["frames"], errors="coerce").fillna(0).sum()),
        "video_minutes": round(_minutes(results), 3),
        "estimated_cost_usd": round(float(results["estimated_cost_usd"].sum()), 6),
        "cost_usd": round(total_cost, 6),
        "usd_per_video_minute": round(total_cost / _minutes(results), 6)
        if _minutes(results)
        else 0.0,
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["budget_usd"] = budget_usd
    table["budget_left_usd"] = None if budget_usd is None else round(budget_usd - total_cost, 6)
    return table


def failures_by_reason(results: pd.DataFrame) -> pd.DataFrame:
    bad = results[~results["status"].isin([Status.succeeded.value, Status.skipped.value])]
    if bad.empty:
        return pd.DataFrame(columns=["status", "error_code", "count"])
    grouped = bad.groupby(["status", "error_code"], dropna=False).size()
    return grouped.reset_index(name="count").sort_values("count", ascending=False)


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style table; written by hand because pandas' to_markdown needs tabulate."""
    if frame.empty:
        return "_none_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for record in frame.itertuples(index=False):
        cells = ["" if pd.isna(v) else str(v) for v in record]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def summary(
    results: pd.DataFrame, params: dict[str, Any], timings: dict[str, Any]
) -> dict[str, Any]:
    counts = {s.value: int((results["status"] == s.value).sum()) for s in Status}
    return {
        "counts": counts,
        "rows": len(results),
        "totals": {
            "estimated_cost_usd": round(float(results["estimated_cost_usd"].sum()), 6),
            "cost_usd": round(float(results["cost_usd"].sum()), 6),
            "frames": int(pd.to_numeric(results["frames"], errors="coerce").fillna(0).sum()),
            "video_seconds": round(_minutes(results) * 60.0, 3),
        },
        "params": params,
        "timings": timings,
    }


def cost_markdown(run_name: str, table: pd.DataFrame, failures: pd.DataFrame) -> str:
    return (
        f"# Cost report: {run_name}\n\n## By endpoint and status\n\n{_markdown(table)}\n"
        f"## Failures by reason\n\n{_markdown(failures)}"
    )


def write_reports(
    storage: Storage,
    run_name: str,
    rows: list[dict[str, Any]],
    params: dict[str, Any],
    timings: dict[str, Any],
    budget_usd: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write results, cost report and summary under ``runs/{run_name}/``; return the summary."""
    results = results_frame(rows)
    base = f"runs/{run_name}"
    parquet = io.BytesIO()
    results.to_parquet(parquet, index=False)
    storage.write_bytes(f"{base}/results.parquet", parquet.getvalue())
    storage.write_bytes(f"{base}/results.csv", results.to_csv(index=False).encode())
    table = cost_table(results, budget_usd)
    failures = failures_by_reason(results)
    storage.write_bytes(f"{base}/cost_report.csv", table.to_csv(index=False).encode())
    storage.write_bytes(f"{base}/cost_report.md", cost_markdown(run_name, table, failures).encode())
    info = summary(results, params, timings)
    info["report_url"] = storage.url(base)
    info.update(extra or {})
    storage.write_bytes(f"{base}/summary.json", json.dumps(info, indent=2, default=str).encode())
    return info
