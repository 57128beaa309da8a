"""The closing steps of every run, single or sharded: one report, its artifacts, the summary,
the gallery and the catalog.

What the reports hold is computed in ``tasks.report``; this module adds the run's timings and
its Prefect artifacts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import get_run_logger

from flows.artifacts import publish_artifacts
from flows.outcome import emit_row_failures, is_shard
from flows.params import RunParams
from flows.runtime import with_run
from tasks.errors import MatteflowError
from tasks.ledger.results import ResultRow
from tasks.manifest.plan import Plan
from tasks.manifest.read import Manifest
from tasks.report.catalog import LATEST, update_catalog
from tasks.report.gallery import GALLERY, sheet_maker, write_gallery
from tasks.report.rows import run_rows
from tasks.report.tables import report_url, write_reports
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
    took, ``extra`` the summary sections of the caller (budget and pacing, or shards). A
    top-level run also writes its gallery and adds its rows to the catalog; a shard leaves both
    to its parent.
    """
    rows = with_run(run_name, run_rows(plan, manifest, done))
    top = not is_shard(run_name)
    files: dict[str, str] = {}
    if top and params.gallery:
        files[GALLERY] = await asyncio.to_thread(gallery_for, storage, run_name, rows, manifest)
    if top:
        files["catalog"] = report_url(storage, LATEST)
    timings = {"total_s": round(time.perf_counter() - started, 3), "jobs_s": round(jobs_s, 3)}
    summary = write_reports(
        storage,
        run_name,
        rows,
        params.model_dump(mode="json"),
        timings,
        params.budget_usd,
        extra={**extra, "files": files},
    )
    summary["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    await publish_artifacts(storage, run_name, rows, params.budget_usd, files.get(GALLERY))
    if top:
        await asyncio.to_thread(catalog_for, storage, run_name, rows, manifest)
        emit_row_failures(run_name, rows)  # a sharded run's rows are told once, by the parent
    get_run_logger().info("run %s: %s", run_name, summary["counts"])
    return summary


def gallery_for(storage: Storage, run_name: str, rows: list[ResultRow], manifest: Manifest) -> str:
    """The run's gallery page (contact sheets from the real input URLs); its URL."""
    inputs = {r.row: r.video_url for r in manifest.rows}
    rel = write_gallery(storage, run_name, rows, sheet_maker(storage), inputs)
    return report_url(storage, rel)


def catalog_for(storage: Storage, run_name: str, rows: list[ResultRow], manifest: Manifest) -> None:
    """Add the run's rows to the catalog; a catalog that cannot be written is logged, and the
    run's own report stands (the next run folds its part in)."""
    try:
        update_catalog(storage, run_name, rows, {r.row for r in manifest.rows if r.id_given})
    except MatteflowError as exc:
        get_run_logger().error("catalog not updated (%s): %s", exc.code, exc)
