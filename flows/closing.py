"""The closing steps of every run, single or sharded: one report, its artifacts, the summary.

What the reports hold is computed in ``tasks.report``; this module adds the run's timings and
its Prefect artifacts.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger

from flows.artifacts import publish_artifacts
from flows.outcome import emit_row_failures, is_shard
from flows.params import RunParams
from flows.runtime import with_run
from tasks.ledger.results import ResultRow
from tasks.manifest.plan import Plan
from tasks.manifest.read import Manifest
from tasks.report.rows import run_rows
from tasks.report.tables import write_reports
from tasks.storage.store import Storage


async def close_run(
    storage: Storage,
    run_name: str,
    params: RunParams,
    plan: Plan,
    manifest: Manifest,
    done: list[ResultRow],
    *,
    started: float,
    jobs_s: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Merge the rows, write the reports and publish the artifacts; return the run summary.

    ``started`` is the run's ``time.perf_counter()`` at its start, ``jobs_s`` the time its jobs
    took, ``extra`` the summary sections of the caller (budget and pacing, or shards).
    """
    rows = with_run(run_name, run_rows(plan, manifest, done))
    timings = {"total_s": round(time.perf_counter() - started, 3), "jobs_s": round(jobs_s, 3)}
    summary = write_reports(
        storage,
        run_name,
        rows,
        params.model_dump(mode="json"),
        timings,
        params.budget_usd,
        extra=extra,
    )
    summary["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    await publish_artifacts(storage, run_name, rows, params.budget_usd)
    if not is_shard(run_name):  # a sharded run's rows are told once, by the parent
        emit_row_failures(run_name, rows)
    get_run_logger().info("run %s: %s", run_name, summary["counts"])
    return summary
