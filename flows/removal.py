"""The main flow: manifest in, one job per video (bounded), verified outputs and reports out."""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)
from prefect.cache_policies import NONE

from flows.params import DEFAULT_MAX_IN_FLIGHT, RunParams
from flows.secrets import load_secret_env
from flows.shards import run_sharded, wants_shards
from tasks.endpoints import endpoint_info
from tasks.execute import run_local_job
from tasks.jobs import Job, Status, now_iso
from tasks.manifest import Manifest, read_manifest
from tasks.plan import Plan, plan_jobs
from tasks.report import (
    cost_markdown,
    cost_table,
    failures_by_reason,
    result_row,
    results_frame,
    write_reports,
)
from tasks.storage import Storage, s3_options

ARTIFACT_ROWS = 200  # the UI table stays readable; the full table is in results.parquet/csv


def storage_for(url: str, s3_endpoint_url: str | None) -> Storage:
    options = s3_options(s3_endpoint_url) if url.startswith("s3://") else None
    return Storage(url, options, input_options=s3_options(s3_endpoint_url))


def crashed_row(job: Job, exc: BaseException) -> dict[str, Any]:
    """A job that raised something unexpected still ends with a status and a reason."""
    return result_row(
        row=job.row, id=job.id, video_url=job.video_url, job_key=job.key, endpoint=job.endpoint,
        status=Status.failed, error_code="internal_error",
        error=f"{type(exc).__name__}: {exc}"[:500], finished_at=now_iso(),
    )  # fmt: skip


@task(name="read-manifest", cache_policy=NONE, persist_result=False)
def read_manifest_task(url: str, option_fields: set[str], s3_endpoint_url: str | None) -> Manifest:
    options = s3_options(s3_endpoint_url) if url.startswith("s3://") else None
    return read_manifest(url, option_fields, options)


async def run_job(job: Job, storage: Storage) -> dict[str, Any]:
    """Dispatch one job to its endpoint's runner; every runner returns a results row."""
    if job.endpoint == "local":
        # CPU-bound: a worker thread of the default executor (bounded: min(32, cores + 4)).
        return await asyncio.to_thread(run_local_job, job, storage)
    raise NotImplementedError(f"no runner for endpoint {job.endpoint!r}")


@task(name="remove-background", cache_policy=NONE, persist_result=False)
async def process_job(job: Job, storage: Storage) -> dict[str, Any]:
    try:
        return await run_job(job, storage)
    except Exception as exc:  # a bug must not lose the row: report it and go on
        get_run_logger().error("job %s crashed:\n%s", job.key, traceback.format_exc())
        return crashed_row(job, exc)


def duplicate_rows(
    plan: Plan, manifest: Manifest, by_key: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows that repeat a job share its outcome; the cost is counted once, on the first row."""
    rows = {r.row: r for r in manifest.rows}
    out = []
    for number, key in plan.duplicates.items():
        first = dict(by_key[key])
        first.update(
            row=number, id=rows[number].id, duplicate_of=first["row"],
            cost_usd=0.0, estimated_cost_usd=0.0,
        )  # fmt: skip
        out.append(first)
    return out


async def publish_artifacts(
    storage: Storage, run_name: str, rows: list[dict[str, Any]], budget: float | None
) -> None:
    results = results_frame(rows)
    shown = results.head(ARTIFACT_ROWS)
    cols = ["row", "id", "status", "error_code", "output_url", "frames", "cost_usd", "elapsed_s"]
    table = shown[cols].astype(object).where(shown[cols].notna(), None).to_dict(orient="records")
    base = storage.url(f"runs/{run_name}")
    await acreate_table_artifact(
        key="results", table=table,
        description=f"First {len(shown)} of {len(results)} rows; full table: {base}/results.csv",
    )  # fmt: skip
    await acreate_markdown_artifact(
        key="cost-report",
        markdown=cost_markdown(run_name, cost_table(results, budget), failures_by_reason(results)),
        description="Cost by endpoint and status",
    )
    await acreate_link_artifact(
        key="results-csv", link=f"{base}/results.csv", link_text="results.csv"
    )


@flow(name="matteflow", log_prints=True)
async def remove_backgrounds(params: RunParams) -> dict[str, Any]:
    """Remove the background of every video in the manifest; return the run summary."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    filled, missing = await load_secret_env()
    if filled or missing:
        logger.info("secrets from Secret blocks: %s; blocks not found: %s", filled, missing)
    run_name = params.resolved_run_name()
    info = endpoint_info(params.endpoint)
    storage = storage_for(params.output, params.s3_endpoint_url)
    manifest = read_manifest_task(params.manifest, info.option_fields, params.s3_endpoint_url)
    if manifest.ignored_columns:
        logger.warning("manifest columns ignored: %s", ", ".join(manifest.ignored_columns))
    plan = plan_jobs(manifest, info, params.run_options())
    logger.info(
        "%d rows: %d jobs, %d invalid, %d duplicates", len(manifest.rows), len(plan.jobs),
        len(plan.invalid), len(plan.duplicates),
    )  # fmt: skip
    if wants_shards(params, plan):
        return await run_sharded(params, run_name, manifest, plan, storage, remove_backgrounds, t0)
    limit = params.max_in_flight or DEFAULT_MAX_IN_FLIGHT[params.endpoint]
    gate = asyncio.Semaphore(limit)

    async def bounded(job: Job) -> dict[str, Any]:
        async with gate:
            return await process_job.with_options(task_run_name=f"row-{job.row}-{job.key[:8]}")(
                job, storage
            )

    t_jobs = time.perf_counter()
    done = await asyncio.gather(*(bounded(job) for job in plan.jobs))
    jobs_s = time.perf_counter() - t_jobs
    by_key = {row["job_key"]: row for row in done}
    rows = [*done, *plan.invalid, *duplicate_rows(plan, manifest, by_key)]
    safe_params = params.model_dump(mode="json")
    summary = write_reports(
        storage, run_name, rows, safe_params,
        {"total_s": round(time.perf_counter() - t0, 3), "jobs_s": round(jobs_s, 3)},
        params.budget_usd,
    )  # fmt: skip
    summary["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    await publish_artifacts(storage, run_name, rows, params.budget_usd)
    logger.info("run %s: %s", run_name, summary["counts"])
    return summary
