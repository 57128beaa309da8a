"""The main flow: manifest in, one job per video (bounded), verified outputs and reports out."""

from __future__ import annotations

import asyncio
import time
import traceback
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.artifacts import JobProgress, publish_artifacts
from flows.params import DEFAULT_MAX_IN_FLIGHT, RunParams
from tasks.cost import price_for
from tasks.endpoints import EndpointInfo, endpoint_info
from tasks.errors import AuthError, ManifestError, MatteflowError
from tasks.execute import run_local_job
from tasks.fal import FalSettings, build_client
from tasks.fal_job import FalRunner, run_fal_job
from tasks.jobs import Job, Status, now_iso
from tasks.manifest import Manifest, read_manifest
from tasks.plan import Plan, plan_jobs
from tasks.preflight import InputSettings, LocalInputPolicy
from tasks.report import result_row, write_reports
from tasks.storage import Storage, s3_options
from tasks.verify import VerifySettings


def storage_for(url: str, s3_endpoint_url: str | None) -> Storage:
    options = s3_options(s3_endpoint_url) if url.startswith("s3://") else None
    return Storage(url, options, input_options=s3_options(s3_endpoint_url))


def crashed_row(job: Job, exc: BaseException) -> dict[str, Any]:
    """A job that raised still ends with a status and a reason (its own code if it has one,
    e.g. storage that stayed away past the retries while a runner saved its ledger entry)."""
    code, error = "internal_error", f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MatteflowError):
        code, error = exc.code, exc.message
    return result_row(
        row=job.row, id=job.id, video_url=job.video_url, job_key=job.key, endpoint=job.endpoint,
        status=Status.failed, error_code=code, error=error[:500], finished_at=now_iso(),
    )  # fmt: skip


@task(name="read-manifest", cache_policy=NONE, persist_result=False)
def read_manifest_task(url: str, option_fields: set[str], s3_endpoint_url: str | None) -> Manifest:
    options = s3_options(s3_endpoint_url) if url.startswith("s3://") else None
    return read_manifest(url, option_fields, options)


def build_fal_runner(
    params: RunParams, info: EndpointInfo, limits: InputSettings | None = None
) -> FalRunner:
    """The run's one fal client (settings from the environment, run flags on top)."""
    overrides: dict[str, Any] = {}
    if params.fal_uploads is not None:
        overrides["uploads"] = params.fal_uploads
    if params.presign_expiry_s is not None:
        overrides["presign_expiry_s"] = params.presign_expiry_s
    settings = FalSettings().model_copy(update=overrides)
    s3 = s3_options(params.s3_endpoint_url) if params.s3_endpoint_url else None
    return FalRunner(
        build_client(settings),
        info,
        price_for(info.name.value),
        resubmit_unknown=params.resubmit_unknown,
        retry_failed=params.retry_failed,
        input_storage_options=s3,
        input_limits=limits,
    )


async def run_job(
    job: Job,
    storage: Storage,
    verify: VerifySettings,
    fal: FalRunner | None = None,
    limits: InputSettings | None = None,
) -> dict[str, Any]:
    """Dispatch one job to its endpoint's runner; every runner returns a results row."""
    if job.endpoint == "local":
        # CPU-bound: a worker thread of the default executor (bounded: min(32, cores + 4)).
        return await asyncio.to_thread(run_local_job, job, storage, settings=verify, limits=limits)
    if fal is not None and job.endpoint == fal.info.name.value:
        return await run_fal_job(job, storage, fal)
    raise NotImplementedError(f"no runner for endpoint {job.endpoint!r}")


@task(name="remove-background", cache_policy=NONE, persist_result=False)
async def process_job(
    job: Job,
    storage: Storage,
    verify: VerifySettings,
    fal: FalRunner | None = None,
    limits: InputSettings | None = None,
) -> dict[str, Any]:
    try:
        return await run_job(job, storage, verify, fal, limits)
    except AuthError:
        raise  # the key is bad for every job: the flow stops the run
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


@flow(name="matteflow", log_prints=True)
async def remove_backgrounds(params: RunParams) -> dict[str, Any]:
    """Remove the background of every video in the manifest; return the run summary."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    run_name = params.resolved_run_name()
    info = endpoint_info(params.endpoint)
    storage = storage_for(params.output, params.s3_endpoint_url)
    limits = InputSettings()
    local_inputs = LocalInputPolicy.for_run(
        params.allow_local_inputs, params.local_input_roots, limits
    )
    # A manifest inside the run's own output root (shard manifests) is the run's own file.
    own = (Path(storage.root),) if storage.is_local else ()
    refusal = local_inputs.including(own).refusal(params.manifest)
    if refusal is not None:
        raise ManifestError(
            refusal.replace("local input", "manifest", 1), code="local_input_refused"
        )
    manifest = read_manifest_task(params.manifest, info.option_fields, params.s3_endpoint_url)
    if manifest.ignored_columns:
        logger.warning("manifest columns ignored: %s", ", ".join(manifest.ignored_columns))
    plan = plan_jobs(manifest, info, params.run_options(), local_inputs=local_inputs)
    logger.info(
        "%d rows: %d jobs, %d invalid, %d duplicates", len(manifest.rows), len(plan.jobs),
        len(plan.invalid), len(plan.duplicates),
    )  # fmt: skip
    limit = params.max_in_flight or DEFAULT_MAX_IN_FLIGHT[params.endpoint]
    gate = asyncio.Semaphore(limit)
    fal = build_fal_runner(params, info, limits) if info.is_fal and plan.jobs else None

    async def bounded(job: Job) -> dict[str, Any]:
        async with gate:
            return await process_job.with_options(task_run_name=f"row-{job.row}-{job.key[:8]}")(
                job, storage, params.verify, fal, limits
            )

    t_jobs = time.perf_counter()
    try:
        # A TaskGroup, not gather: an AuthError in one job cancels the others at once.
        async with JobProgress(len(plan.jobs)) as progress, asyncio.TaskGroup() as group:
            running = [group.create_task(progress.track(bounded(job))) for job in plan.jobs]
    except* AuthError as failed:
        raise failed.exceptions[0] from None
    finally:
        if fal is not None:
            await fal.aclose()
    done = [t.result() for t in running]
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
