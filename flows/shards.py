"""Scale-out: split a catalog run into shards that run as child flow runs on any worker.

The parent plans the whole manifest once (so validation and de-duplication span every shard),
writes each shard's rows to ``{output}/runs/{run}/shards/NNN.jsonl`` and starts one child run per
shard: through ``run_deployment`` when the parent itself runs from a deployment (any worker on
any machine picks the child up), otherwise as in-process subflows, one after another. A child
writes its reports next to its shard file; the parent maps the rows back to manifest row numbers
and merges everything into one report and one cost total.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pyarrow.parquet as pq
from prefect import get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import arun_deployment

from flows.closing import close_run
from flows.params import RunParams
from tasks.errors import ErrorCode
from tasks.ledger.jobs import Job, Status
from tasks.ledger.results import ResultRow, ended_row, rows_from_table
from tasks.manifest.plan import Plan
from tasks.manifest.read import Manifest
from tasks.storage.store import Storage

Runner = Callable[[RunParams], Awaitable[dict[str, Any]]]
WORKER_LABEL = "prefect.worker.name"  # set on a flow run by the worker that runs it


@dataclass
class Shard:
    """One slice of a run: its rows (manifest row numbers, in file order) and where it lives."""

    index: int
    run_name: str
    manifest: str
    jobs: list[Job]
    budget_usd: float | None = None

    @property
    def rows(self) -> list[int]:
        return [job.row for job in self.jobs]

    @property
    def label(self) -> str:
        return f"{self.index:03d}"


@dataclass
class ShardOutcome:
    """How a shard's flow run ended, who ran it, and its results rows (manifest numbering)."""

    shard: Shard
    state: str
    rows: list[ResultRow]
    flow_run_id: str | None = None
    worker: str | None = None
    host: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        statuses = [r["status"] for r in self.rows]
        return {
            "shard": self.shard.label,
            "run_name": self.shard.run_name,
            "manifest": self.shard.manifest,
            "jobs": len(self.shard.jobs),
            "state": self.state,
            "flow_run_id": self.flow_run_id,
            "worker": self.worker,
            "host": self.host,
            "message": self.message,
            "counts": {s: statuses.count(s) for s in sorted(set(statuses))},
            "cost_usd": round(sum(float(r["cost_usd"] or 0.0) for r in self.rows), 6),
        }


def wants_shards(params: RunParams, plan: Plan) -> bool:
    """Shard only when asked to and when there is more than one shard's worth of jobs."""
    return bool(params.shard_size) and len(plan.jobs) > (params.shard_size or 0)


def split_jobs(jobs: Sequence[Job], shard_size: int) -> list[list[Job]]:
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    return [list(jobs[i : i + shard_size]) for i in range(0, len(jobs), shard_size)]


def budget_shares(budget_usd: float | None, parts: Sequence[Sequence[Job]]) -> list[float | None]:
    """Split the run's budget by estimated cost (by job count when nothing is estimated)."""
    if budget_usd is None:
        return [None] * len(parts)
    weights = [sum(job.estimated_cost_usd for job in part) for part in parts]
    if not any(weights):
        weights = [float(len(part)) for part in parts]
    total = sum(weights)
    # Round down so that the shares never add up to more than the budget.
    return [math.floor(budget_usd * w / total * 1e6) / 1e6 for w in weights]


def write_shards(
    storage: Storage,
    run_name: str,
    manifest: Manifest,
    plan: Plan,
    shard_size: int,
    budget_usd: float | None,
) -> list[Shard]:
    """Write ``runs/{run}/shards/NNN.jsonl`` for each slice of the plan's jobs."""
    by_row = {r.row: r for r in manifest.rows}
    parts = split_jobs(plan.jobs, shard_size)
    shards = []
    for index, (jobs, budget) in enumerate(
        zip(parts, budget_shares(budget_usd, parts), strict=True), 1
    ):
        rel = f"runs/{run_name}/shards/{index:03d}.jsonl"
        # The rows behind the jobs, as JSONL the child reads like any manifest.
        lines = [
            json.dumps(
                {**by_row[j.row].overrides, "id": j.id, "video_url": by_row[j.row].video_url}
            )
            for j in jobs
        ]
        storage.write_bytes(rel, ("\n".join(lines) + "\n").encode())
        shards.append(
            Shard(
                index=index,
                run_name=f"{run_name}/shards/{index:03d}",
                manifest=storage.url(rel),
                jobs=jobs,
                budget_usd=budget,
            )
        )
    return shards


def child_params(params: RunParams, shard: Shard) -> RunParams:
    """The parent's parameters, pointed at one shard (and never sharding again)."""
    return params.model_copy(
        update={
            "manifest": shard.manifest,
            "run_name": shard.run_name,
            "shard_size": None,
            "budget_usd": shard.budget_usd,
        }
    )


def remap_rows(shard: Shard, rows: list[ResultRow]) -> list[ResultRow]:
    """A child numbers its rows 1..n in shard-file order; give them their manifest numbers."""
    numbers = shard.rows
    out = []
    for row in rows:
        fixed: dict[str, Any] = {"row": numbers[row.row - 1]}
        if row.duplicate_of is not None:
            fixed["duplicate_of"] = numbers[row.duplicate_of - 1]
        out.append(row.model_copy(update=fixed))
    return out


def failed_rows(shard: Shard, reason: str) -> list[ResultRow]:
    """Every job of a shard whose run ended without results: failed, with the reason."""
    return [
        ended_row(job, Status.failed, ErrorCode.shard_failed, reason, attempts=None)
        for job in shard.jobs
    ]


def read_shard_rows(storage: Storage, shard: Shard) -> list[ResultRow] | None:
    """The child's results, or None when they are missing or belong to other jobs (stale)."""
    data = storage.read_bytes(f"runs/{shard.run_name}/results.parquet")
    if data is None:
        return None
    rows = rows_from_table(pq.read_table(io.BytesIO(data)))
    if sorted(r.job_key for r in rows if r.job_key) != sorted(job.key for job in shard.jobs):
        return None
    return remap_rows(shard, rows)


def collect(storage: Storage, shard: Shard, state: str, **info: Any) -> ShardOutcome:
    """Turn a finished child run into an outcome: its rows, or failed rows saying why."""
    rows = read_shard_rows(storage, shard) if state == "Completed" else None
    if rows is None:
        why = info.get("message") or "no results were written"
        rows = failed_rows(shard, f"shard {shard.label} ended {state}: {why}")
    return ShardOutcome(shard=shard, state=state, rows=rows, **info)


def poll_interval(shards: int) -> float:
    """About four status reads a second in all, however many shards wait at once."""
    return min(60.0, max(2.0, shards / 4))


async def run_on_workers(
    deployment_id: UUID, params: RunParams, shards: list[Shard], storage: Storage
) -> list[ShardOutcome]:
    """One child flow run of the deployment per shard; wait for all of them.

    The idempotency key ties each child to this attempt of the parent and its shard: a create
    call the client repeats after a lost answer gets the same child, not a second one, while a
    retry of the parent (a new attempt) starts fresh children, whose finished jobs the ledger
    then reuses.
    """
    from prefect.runtime import flow_run as this_run

    poll = poll_interval(len(shards))
    attempt = f"{this_run.id}:{this_run.run_count}" if this_run.id else None

    async def one(shard: Shard) -> ShardOutcome:
        child = child_params(params, shard)
        try:
            flow_run: FlowRun = await arun_deployment(
                deployment_id,
                parameters={"params": child.model_dump(mode="json")},
                flow_run_name=shard.run_name.replace("/shards/", "-shard-"),
                idempotency_key=f"{attempt}:{shard.run_name}" if attempt else None,
                timeout=None,
                poll_interval=poll,
                as_subflow=True,
            )
        except Exception as exc:  # the API refused this shard: report it, keep the others
            return collect(storage, shard, "NotStarted", message=f"{type(exc).__name__}: {exc}")
        state = flow_run.state
        infra = flow_run.infrastructure_pid or ""
        worker = flow_run.labels.get(WORKER_LABEL)
        return collect(
            storage,
            shard,
            (state.name or state.type.value) if state else "Unknown",
            flow_run_id=str(flow_run.id),
            worker=None if worker is None else str(worker),
            host=infra.rsplit(":", 1)[0] or None,
            message=(state.message if state and not state.is_completed() else None),
        )

    return list(await asyncio.gather(*(one(shard) for shard in shards)))


async def run_in_process(
    runner: Runner, params: RunParams, shards: list[Shard], storage: Storage
) -> list[ShardOutcome]:
    """Subflows one after another: in one process each shard already has all its job slots."""
    outcomes = []
    for shard in shards:
        try:
            await runner(child_params(params, shard))
            state, message = "Completed", None
        except Exception as exc:  # a failed shard must not lose the others
            state, message = "Failed", f"{type(exc).__name__}: {exc}"
        outcomes.append(collect(storage, shard, state, host=socket.gethostname(), message=message))
    return outcomes


def current_deployment_id() -> UUID | None:
    from prefect.runtime import deployment

    value = deployment.id
    return UUID(str(value)) if value else None


async def run_sharded(
    params: RunParams,
    run_name: str,
    manifest: Manifest,
    plan: Plan,
    storage: Storage,
    runner: Runner,
    t0: float,
) -> dict[str, Any]:
    """Run the plan's jobs as shards, then write one merged report; return its summary."""
    logger = get_run_logger()
    assert params.shard_size  # wants_shards() said so
    shards = write_shards(storage, run_name, manifest, plan, params.shard_size, params.budget_usd)
    deployment_id = current_deployment_id()
    where = f"deployment {deployment_id}" if deployment_id else "this process"
    logger.info(
        "%d jobs in %d shards of up to %d, on %s",
        len(plan.jobs),
        len(shards),
        params.shard_size,
        where,
    )
    t_jobs = time.perf_counter()
    if deployment_id:
        outcomes = await run_on_workers(deployment_id, params, shards, storage)
    else:
        outcomes = await run_in_process(runner, params, shards, storage)
    jobs_s = time.perf_counter() - t_jobs
    bad = [o.shard.label for o in outcomes if o.state != "Completed"]
    if bad:
        logger.error("shards that did not complete: %s", ", ".join(bad))
    return await close_run(
        storage,
        run_name,
        params,
        plan,
        manifest,
        [row for outcome in outcomes for row in outcome.rows],
        started=t0,
        jobs_s=jobs_s,
        extra={"shards": [outcome.info() for outcome in outcomes]},
    )
