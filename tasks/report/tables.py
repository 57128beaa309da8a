"""Results table, cost report and summary: the files a catalog team opens after a run.

Every figure in the cost report is a sum over rows of the results table, so the two always
agree; ``tests/tasks/report/test_tables.py`` checks that they do.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from tasks.ledger.jobs import Status
from tasks.ledger.results import RESULT_COLUMNS, ResultRow, results_table
from tasks.storage.store import Storage, redact_url

_NUMERIC_ZERO = ("estimated_cost_usd", "cost_usd", "possibly_billed_usd")
OK_STATUSES = (Status.succeeded.value, Status.skipped.value)
REPORT_FILES = (
    "results.parquet",
    "results.csv",
    "cost_report.csv",
    "cost_report.md",
    "summary.json",
)
ALL = "all"
TOTAL = "TOTAL"


def results_frame(rows: list[ResultRow]) -> pd.DataFrame:
    """The rows as a frame for the reports' sums and groupings (files use ``results_table``)."""
    frame = pd.DataFrame([r.model_dump(mode="json") for r in rows], columns=RESULT_COLUMNS)
    for col in _NUMERIC_ZERO:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(0.0).astype(float)
    return frame.sort_values("row", kind="stable").reset_index(drop=True)


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").fillna(0)


def _figures(part: pd.DataFrame) -> dict[str, Any]:
    minutes = float(_num(part["duration_s"]).sum()) / 60.0
    cost = float(part["cost_usd"].sum())
    return {
        "jobs": len(part),
        "frames": int(_num(part["frames"]).sum()),
        "video_minutes": round(minutes, 4),
        "estimated_cost_usd": round(float(part["estimated_cost_usd"].sum()), 6),
        "cost_usd": round(cost, 6),
        "possibly_billed_usd": round(float(part["possibly_billed_usd"].sum()), 6),
        "usd_per_video_minute": round(cost / minutes, 6) if minutes else 0.0,
    }


def _charged(results: pd.DataFrame) -> float:
    """What counts against a budget: the billed cost and what 422s may have been billed."""
    return float(results["cost_usd"].sum()) + float(results["possibly_billed_usd"].sum())


def cost_table(results: pd.DataFrame, budget_usd: float | None = None) -> pd.DataFrame:
    """Jobs, frames, video minutes, estimated and actual cost: by endpoint and status, by
    endpoint, by status, and in total (``group`` says which). Budget columns are on the total."""
    keyed = results.assign(
        endpoint=results["endpoint"].fillna("?"), status=results["status"].fillna("?")
    )
    rows: list[dict[str, Any]] = []
    for (endpoint, status), part in keyed.groupby(["endpoint", "status"], sort=True):
        rows.append(
            {"group": "endpoint_status", "endpoint": endpoint, "status": status, **_figures(part)}
        )
    for endpoint, part in keyed.groupby("endpoint", sort=True):
        rows.append({"group": "endpoint", "endpoint": endpoint, "status": ALL, **_figures(part)})
    for status, part in keyed.groupby("status", sort=True):
        rows.append({"group": "status", "endpoint": ALL, "status": status, **_figures(part)})
    total = {"group": "total", "endpoint": TOTAL, "status": ALL, **_figures(keyed)}
    total["budget_usd"] = budget_usd
    total["budget_left_usd"] = (
        None if budget_usd is None else round(budget_usd - _charged(keyed), 6)
    )
    rows.append(total)
    return pd.DataFrame(rows)


def failures_by_reason(results: pd.DataFrame) -> pd.DataFrame:
    """Rows that did not succeed, counted per status and reason code, with one example each.

    A verification failure counts once under each of its reasons (``verify_reasons``).
    """
    columns = ["status", "reason", "count", "example"]
    bad = results[~results["status"].isin(OK_STATUSES)]
    if bad.empty:
        return pd.DataFrame(columns=columns)
    records = []
    fields = ["status", "error_code", "verify_reasons", "error"]
    for status, code, reasons, error in bad[fields].itertuples(index=False):
        if status == Status.failed_verification.value and isinstance(reasons, str) and reasons:
            code = reasons
        codes = [c for c in str(code).split(",") if c] if isinstance(code, str) else ["unknown"]
        texts = str(error).split("; ") if isinstance(error, str) else []
        for i, c in enumerate(codes):
            text = (
                texts[i] if len(texts) == len(codes) else (error if isinstance(error, str) else "")
            )
            records.append({"status": status, "reason": c, "example": str(text)[:160]})
    exploded = pd.DataFrame(records)
    grouped = exploded.groupby(["status", "reason"], sort=True)
    table = grouped.agg(count=("example", "size"), example=("example", "first")).reset_index()
    return table.sort_values(["count", "status", "reason"], ascending=[False, True, True])[
        columns
    ].reset_index(drop=True)


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style table; written by hand because pandas' to_markdown needs tabulate."""
    if frame.empty:
        return "_none_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for record in frame.itertuples(index=False):
        cells = ["" if pd.isna(v) else str(v) for v in record]
        lines.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return "\n".join(lines) + "\n"


def budget_status(results: pd.DataFrame, budget_usd: float | None) -> dict[str, Any]:
    spent = round(float(results["cost_usd"].sum()), 6)
    return {
        "budget_usd": budget_usd,
        "spent_usd": spent,
        "possibly_billed_usd": round(float(results["possibly_billed_usd"].sum()), 6),
        "remaining_usd": None if budget_usd is None else round(budget_usd - _charged(results), 6),
        "skipped_for_budget": int((results["status"] == Status.skipped_budget.value).sum()),
    }


def summary(
    results: pd.DataFrame,
    params: dict[str, Any],
    timings: dict[str, Any],
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """Counts per status, totals, verification outcome, budget, parameters and timings."""
    counts = {s.value: int((results["status"] == s.value).sum()) for s in Status}
    totals = _figures(results)
    reasons = failures_by_reason(results[results["status"] == Status.failed_verification.value])
    return {
        "counts": counts,
        "rows": len(results),
        "totals": {
            "estimated_cost_usd": totals["estimated_cost_usd"],
            "cost_usd": totals["cost_usd"],
            "possibly_billed_usd": totals["possibly_billed_usd"],
            "frames": totals["frames"],
            "video_seconds": round(float(_num(results["duration_s"]).sum()), 3),
            "usd_per_video_minute": totals["usd_per_video_minute"],
        },
        "verification": {
            "verified": int((results["verified"] == True).sum()),  # noqa: E712 - NaN-safe
            "failed": counts[Status.failed_verification.value],
            "reasons": {r.reason: int(r.count) for r in reasons.itertuples(index=False)},
            "mean_flicker": _mean(results["flicker"]),
        },
        "budget": budget_status(results, budget_usd),
        "speed": speed(results),
        "params": params,
        "timings": timings,
    }


def _spread(series: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(series, errors="coerce").dropna()
    if not len(values):
        return {"jobs": 0, "total": None, "mean": None, "p95": None, "max": None}
    return {
        "jobs": len(values),
        "total": round(float(values.sum()), 3),
        "mean": round(float(values.mean()), 4),
        "p95": round(float(values.quantile(0.95)), 4),
        "max": round(float(values.max()), 4),
    }


def speed(results: pd.DataFrame) -> dict[str, Any]:
    """How fal's completions were seen (stream or polls, how late at most) and what the client
    spent per job: verification seconds and CPU seconds (rows that did the work only)."""
    via = results["status_via"].dropna()
    return {
        "status_via": {str(k): int(v) for k, v in via.value_counts().items()},
        "status_polls": int(_num(results["status_polls"]).sum()),
        "detect_delay_s": _spread(results["detect_delay_s"]),
        "verify_s": _spread(results["verify_s"]),
        "cpu_s": _spread(results["cpu_s"]),
    }


def _mean(series: pd.Series) -> float | None:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return round(float(values.mean()), 5) if len(values) else None


def cost_markdown(
    run_name: str,
    table: pd.DataFrame,
    failures: pd.DataFrame,
    budget: dict[str, Any] | None = None,
) -> str:
    """The cost report as Markdown: totals and budget first, then the breakdowns."""
    cols = [
        "jobs",
        "frames",
        "video_minutes",
        "estimated_cost_usd",
        "cost_usd",
        "usd_per_video_minute",
    ]

    def part(group: str, keys: list[str]) -> str:
        return _markdown(table[table["group"] == group][keys + cols])

    lines = [f"# Cost report: {run_name}\n", "## Total\n", part("total", [])]
    if budget is not None:
        lines += ["## Budget\n", _markdown(pd.DataFrame([budget]))]
    lines += [
        "## By endpoint\n",
        part("endpoint", ["endpoint"]),
        "## By status\n",
        part("status", ["status"]),
        "## By endpoint and status\n",
        part("endpoint_status", ["endpoint", "status"]),
        "## Failures by reason\n",
        _markdown(failures),
        "_Costs are sums over the rows of results.csv; a repeated manifest row shares its "
        "job's output and costs nothing (its frames and minutes are still listed)._\n",
    ]
    return "\n".join(lines)


def report_url(storage: Storage, rel: str) -> str:
    """A URL a person can open or copy: ``file://`` for local storage, the storage URL else."""
    url = storage.url(rel)
    if storage.is_local:
        return Path(url).resolve().as_uri()
    return redact_url(url)


def write_reports(
    storage: Storage,
    run_name: str,
    rows: list[ResultRow],
    params: dict[str, Any],
    timings: dict[str, Any],
    budget_usd: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write results, cost report and summary under ``runs/{run_name}/``; return the summary."""
    results = results_frame(rows)
    typed = results_table(rows)
    base = f"runs/{run_name}"
    parquet = io.BytesIO()
    pq.write_table(typed, parquet)
    storage.write_bytes(f"{base}/results.parquet", parquet.getvalue())
    csv = typed.to_pandas(types_mapper=pd.ArrowDtype).to_csv(index=False)
    storage.write_bytes(f"{base}/results.csv", csv.encode())
    table = cost_table(results, budget_usd)
    failures = failures_by_reason(results)
    budget = budget_status(results, budget_usd)
    storage.write_bytes(f"{base}/cost_report.csv", table.to_csv(index=False).encode())
    markdown = cost_markdown(run_name, table, failures, budget)
    storage.write_bytes(f"{base}/cost_report.md", markdown.encode())
    info = summary(results, params, timings, budget_usd)
    info["report_url"] = storage.url(base)
    info["files"] = {name: report_url(storage, f"{base}/{name}") for name in REPORT_FILES}
    for key, value in (extra or {}).items():  # sections the flow adds (budget, pacing, …)
        if isinstance(value, dict) and isinstance(info.get(key), dict):
            info[key] = {**info[key], **value}
        else:
            info[key] = value
    storage.write_bytes(f"{base}/summary.json", json.dumps(info, indent=2, default=str).encode())
    return info


ARTIFACT_COLUMNS = [
    "row",
    "id",
    "status",
    "error_code",
    "error",
    "output_url",
    "output_format",
    "frames",
    "duration_s",
    "has_alpha",
    "fg_fraction",
    "flicker",
    "cost_usd",
    "elapsed_s",
]


def artifact_rows(results: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` rows for the UI table, problems first: they are what people look for."""
    ok = results["status"].isin(OK_STATUSES)
    ordered = pd.concat([results[~ok], results[ok]]).head(limit)[ARTIFACT_COLUMNS].copy()
    ordered["error"] = ordered["error"].map(lambda e: e[:200] if isinstance(e, str) else e)
    cleaned = ordered.astype(object).where(ordered.notna(), None)
    return [dict(r) for r in cleaned.to_dict(orient="records")]


def progress_line(done: int, total: int, by_status: dict[str, int]) -> str:
    parts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()) if n)
    return f"{done} of {total} jobs finished" + (f": {parts}" if parts else "")
