"""The main flow: manifest in, one job per video (bounded), verified outputs and reports out."""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.settings import get_current_settings
from prefect.states import Cancelled

from flows.closing import close_run
from flows.concurrency import ensure_shared_limit, make_pacer
from flows.outcome import finish_run, user_error_state
from flows.params import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_SUBMIT_RATE,
    TASK_RUN_PER_JOB_UP_TO,
    RunParams,
)
from flows.preflight import manifest_for, output_storage, user_error_line
from flows.runtime import cancel_requests, progress_artifact
from flows.secrets import load_secret_env
from flows.shards import run_sharded, wants_shards
from tasks.endpoints import EndpointInfo, EndpointName, endpoint_info
from tasks.engine.job import run_local_job
from tasks.errors import AuthError, ErrorCode, ManifestError, MatteflowError
from tasks.fal.client import FalSettings, build_client
from tasks.fal.job import FalRunner, run_fal_job
from tasks.ledger.claims import ClaimOwner
from tasks.ledger.jobs import Job, JobState, Ledger, Status
from tasks.ledger.results import ResultRow, ended_row
from tasks.manifest.plan import Plan, plan_jobs
from tasks.manifest.read import Manifest
from tasks.media.preflight import InputSettings, LocalInputPolicy
from tasks.media.verify import VerifySettings
from tasks.run.budget import BudgetGuard
from tasks.run.cost import price_for
from tasks.run.fanout import Admission, PoolResult, run_pool
from tasks.run.pacing import Pacer, PacingConfig
from tasks.run.progress import RunProgress
from tasks.storage.store import Storage, s3_options

storage_for = output_storage  # the name callers (the CLI, tests) know


def crashed_row(job: Job, exc: BaseException) -> ResultRow:
    """A job that raised still ends with a status and a reason (its own code if it has one,
    e.g. storage that stayed away past the retries while a runner saved its ledger entry)."""
    if isinstance(exc, MatteflowError):
        return ended_row(job, Status.failed, exc.code, exc.message, attempts=None)
    error = f"{type(exc).__name__}: {exc}"
    return ended_row(job, Status.failed, ErrorCode.internal_error, error, attempts=None)


def build_fal_runner(
    params: RunParams,
    info: EndpointInfo,
    admission: Admission | None = None,
    limits: InputSettings | None = None,
    run_name: str = "matteflow",
) -> FalRunner:
    """The run's one fal client (settings from the environment, run flags on top); the run's
    name goes into the claims it takes, so another run waiting on one can say who holds it."""
    overrides: dict[str, Any] = {}
    if params.fal_uploads is not None:
        overrides["uploads"] = params.fal_uploads
    if params.presign_expiry_s is not None:
        overrides["presign_expiry_s"] = params.presign_expiry_s
    queue = {
        "start_timeout_s": params.fal_start_timeout_s,
        "priority": params.fal_priority,
        "no_retry": params.fal_no_retry,
    }
    overrides.update({k: v for k, v in queue.items() if v is not None})
    settings = FalSettings().model_copy(update=overrides)
    s3 = s3_options(params.s3_endpoint_url) if params.s3_endpoint_url else None
    return FalRunner(
        build_client(settings),
        info,
        price_for(info.name.value),
        resubmit_unknown=params.resubmit_unknown,
        retry_failed=params.retry_failed,
        resubmit_expired=params.resubmit_expired,
        owner=ClaimOwner(run=run_name),
        input_storage_options=s3,
        input_limits=limits,
        verify=params.verify,
        submit_guard=admission.submit_guard if admission else None,
        endpoint_slot=admission.slot if admission else None,
    )


@dataclass(frozen=True)
class JobContext:
    """What every job of one run shares: its storage, fal runner, output checks, input limits."""

    storage: Storage
    fal: FalRunner | None = None
    verify: VerifySettings = field(default_factory=VerifySettings)
    limits: InputSettings = field(default_factory=InputSettings)


async def run_job(job: Job, ctx: JobContext) -> ResultRow:
    """Dispatch one job to its endpoint's runner; every runner returns a results row."""
    if job.endpoint == "local":
        # CPU-bound: a worker thread of the default executor (bounded: min(32, cores + 4)).
        return await asyncio.to_thread(
            run_local_job, job, ctx.storage, settings=ctx.verify, limits=ctx.limits
        )
    if ctx.fal is not None and job.endpoint == ctx.fal.info.name.value:
        return await run_fal_job(job, ctx.storage, ctx.fal)
    raise NotImplementedError(f"no runner for endpoint {job.endpoint!r}")


@task(name="remove-background", cache_policy=NONE, persist_result=False)
async def process_job(job: Job, ctx: JobContext) -> ResultRow:
    """One job as its own task run: visible in the UI, for runs small enough to afford it."""
    return await run_or_cancel(job, ctx)


async def run_or_cancel(job: Job, ctx: JobContext) -> ResultRow:
    """Run ``job``; if the run is cancelled meanwhile, a fal job is cancelled at fal and
    followed by its runner (tasks/fal/job.py, under the job's claim), which returns a
    ``cancelled`` row: inside the job's task run, so the task run ends Completed, not Crashed.
    A local job runs in a thread: it finishes, and the ledger records it.
    """
    return await run_job(job, ctx)


class FlowJobs:
    """The worker pool's view of this flow: how a job runs, what it costs, how it ended."""

    def __init__(self, ctx: JobContext, *, task_runs: bool) -> None:
        self.ctx = ctx
        self.task_runs = task_runs
        self.holds_slot = ctx.fal is not None  # a fal job holds its slot only while at fal
        self.ledger = Ledger(ctx.storage)

    async def run(self, job: Job) -> ResultRow:
        if self.task_runs:
            named = process_job.with_options(task_run_name=f"row-{job.row}-{job.key[:8]}")
            return await named(job, self.ctx)
        return await run_or_cancel(job, self.ctx)

    def interrupted_row(self, job: Job, exc: BaseException | None) -> ResultRow:
        if exc is not None:
            get_run_logger().error(
                "job %s crashed:\n%s", job.key, "".join(traceback.format_exception(exc))
            )
            return crashed_row(job, exc)
        entry = self.ledger.get(job.key)
        note = "run cancelled while this job was in flight"
        if entry is not None and entry.request_id and entry.state in RESUMABLE:
            note += f"; fal request {entry.request_id} is kept in the ledger for the next run"
        return ended_row(job, Status.cancelled, ErrorCode.cancelled, note)


def budget_summary(budget: BudgetGuard) -> dict[str, Any]:
    return {
        "budget_usd": budget.budget_usd,
        "spent_usd": round(budget.spent_usd, 6),
        "left_usd": None if budget.left_usd is None else round(budget.left_usd, 6),
        "jobs_refused": budget.refused,
    }


RESUMABLE = (JobState.submitting, JobState.submitted, JobState.running)


def pacing_for(params: RunParams) -> PacingConfig:
    endpoint = EndpointName(params.endpoint)
    return PacingConfig(
        max_in_flight=params.max_in_flight or DEFAULT_MAX_IN_FLIGHT[endpoint],
        submit_rate_per_s=params.submit_rate or DEFAULT_SUBMIT_RATE[endpoint],
        shared_limit=params.shared_limit,
    )


def manifest_policy(params: RunParams, storage: Storage, limits: InputSettings) -> LocalInputPolicy:
    """Which local files the run may read; raises when the manifest itself is one it may not."""
    local_inputs = LocalInputPolicy.for_run(
        params.allow_local_inputs, params.local_input_roots, limits
    )
    # A manifest inside the run's own output root (shard manifests) is the run's own file.
    own = (Path(storage.root),) if storage.is_local else ()
    refusal = local_inputs.including(own).refusal(params.manifest)
    if refusal is not None:
        raise ManifestError(
            refusal.replace("local input", "manifest", 1), code=ErrorCode.local_input_refused
        )
    return local_inputs


def plan_run(
    params: RunParams, info: EndpointInfo, local_inputs: LocalInputPolicy
) -> tuple[Manifest, Plan]:
    """Read the manifest and turn its rows into jobs, invalid rows and repeats."""
    logger = get_run_logger()
    # Read in the flow itself, not a task: an unusable manifest is a user error, shown as one
    # line (flows/outcome.py), never as a task run's traceback.
    manifest = manifest_for(params.manifest, info.name.value, params.s3_endpoint_url)
    if manifest.ignored_columns:
        logger.warning("manifest columns ignored: %s", ", ".join(manifest.ignored_columns))
    plan = plan_jobs(manifest, info, params.run_options(), local_inputs=local_inputs)
    logger.info(
        "%d rows: %d jobs, %d invalid, %d duplicates",
        len(manifest.rows),
        len(plan.jobs),
        len(plan.invalid),
        len(plan.duplicates),
    )
    return manifest, plan


async def shared_pacing(params: RunParams) -> PacingConfig:
    """The run's pacing; a cap shared across workers is created (or resized) first."""
    pacing = pacing_for(params)
    if pacing.shared_limit:
        await ensure_shared_limit(pacing.shared_limit, pacing.max_in_flight)
        if get_current_settings().api.url is None:
            get_run_logger().warning(
                "shared limit %r on Prefect's temporary server: its lease reaper does not run, so"
                " slots held by a killed run stay taken; free them with `prefect gcl update %s"
                " --active-slots 0` when no run is active",
                pacing.shared_limit,
                pacing.shared_limit,
            )
    return pacing


async def run_jobs(
    plan: Plan, handler: FlowJobs, admission: Admission, fal: FalRunner | None
) -> tuple[PoolResult, float]:
    """Every job through the worker pool, with progress and cancellation; (result, seconds)."""
    progress = RunProgress(total=len(plan.jobs))
    cancel = asyncio.Event()
    t_jobs = time.perf_counter()
    progress.start()
    try:
        async with cancel_requests(cancel), progress_artifact(progress):
            # AuthError: the key is bad for every job; the pool stops and re-raises it.
            pool = await run_pool(
                plan.jobs,
                handler,
                admission,
                cancel=cancel,
                on_row=progress.advance,
                fatal=(AuthError,),
                raise_fatal=False,  # raised below, once the report is written
            )
    finally:
        progress.stop()
        await admission.pacer.aclose()
        if fal is not None:
            await fal.aclose()
    return pool, time.perf_counter() - t_jobs


def pool_summary(
    pool: PoolResult, budget: BudgetGuard, pacing: PacingConfig, pacer: Pacer, task_runs: bool
) -> dict[str, Any]:
    """The single run's own summary sections: cancellation, budget and pacing."""
    return {
        "cancelled": pool.cancelled,
        "budget": budget_summary(budget),
        "pacing": {
            "max_in_flight": pacing.max_in_flight,
            "peak_in_flight": pacer.peak_in_flight,
            "submit_rate_per_s": pacing.submit_rate_per_s,
            "task_run_per_job": task_runs,
            "shared_limit": pacing.shared_limit,
            "shared_slots_acquired": pacer.shared.acquired if pacer.shared else 0,
        },
    }


@flow(name="matteflow", log_prints=True)
async def remove_backgrounds(params: RunParams) -> Any:
    """Remove the background of every video in the manifest; return the run summary.

    The run ends Completed when every row succeeded or was reused, "Completed with failures"
    or Failed when rows failed (``params.fail_when``), Failed with one line when it cannot
    start (flows/outcome.py), Cancelled when cancelled.
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    filled, missing = await load_secret_env()
    if filled or missing:
        logger.info("secrets from Secret blocks: %s; blocks not found: %s", filled, missing)
    run_name = params.resolved_run_name()
    info = endpoint_info(params.endpoint)
    limits = InputSettings()
    try:
        storage = storage_for(params.output, params.s3_endpoint_url)
        manifest, plan = plan_run(params, info, manifest_policy(params, storage, limits))
    except MatteflowError as exc:
        logger.error(user_error_line(exc))
        return user_error_state(run_name, exc)
    if wants_shards(params, plan):
        sharded = await run_sharded(
            params, run_name, manifest, plan, storage, remove_backgrounds, t0
        )
        return finish_run(run_name, params, sharded)
    try:
        summary, cancelled = await run_single(
            params, run_name, info, storage, limits, manifest, plan, t0
        )
    except MatteflowError as exc:  # a refused key or locked account, after the report is written
        return user_error_state(run_name, exc)
    if cancelled:
        logger.warning("run %s cancelled; partial report at %s", run_name, summary["report_url"])
        # A returned state becomes the run's final state: the UI shows Cancelled, not Completed;
        # the summary is in storage (callers use return_state=True, see flows/cli.py).
        return Cancelled(message=f"cancelled: {summary['counts']}")
    return finish_run(run_name, params, summary)


async def run_single(
    params: RunParams,
    run_name: str,
    info: EndpointInfo,
    storage: Storage,
    limits: InputSettings,
    manifest: Manifest,
    plan: Plan,
    t0: float,
) -> tuple[dict[str, Any], bool]:
    """The jobs of an unsharded run through the worker pool, then its report; (summary,
    cancelled)."""
    pacing = await shared_pacing(params)
    task_runs = params.task_run_per_job
    if task_runs is None:
        task_runs = len(plan.jobs) <= TASK_RUN_PER_JOB_UP_TO
    budget = BudgetGuard(params.budget_usd)
    pacer = make_pacer(pacing)
    admission = Admission(pacer, budget)
    fal = (
        build_fal_runner(params, info, admission, limits, run_name)
        if info.is_fal and plan.jobs
        else None
    )
    handler = FlowJobs(JobContext(storage, fal, params.verify, limits), task_runs=task_runs)
    pool, jobs_s = await run_jobs(plan, handler, admission, fal)
    summary = await close_run(
        storage,
        run_name,
        params,
        plan,
        manifest,
        pool.rows,
        started=t0,
        jobs_s=jobs_s,
        extra=pool_summary(pool, budget, pacing, pacer, task_runs),
    )
    if pool.failure is not None:  # a refused key or a locked account: every job would fail
        get_run_logger().error(
            "run %s stopped: %s; report at %s", run_name, pool.failure, summary["report_url"]
        )
        raise pool.failure
    return summary, pool.cancelled
