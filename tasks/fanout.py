"""Bounded fan-out: a fixed pool of worker coroutines pulls jobs, whatever the catalog size.

There is never one coroutine, thread or task run waiting per job: ``max_in_flight`` workers take
the next job from a shared iterator, so memory and scheduling cost do not grow with N beyond
the rows of the results table. Cancellation stops handing out jobs, lets each job in flight
clean up (the runner cancels its fal request and records the ledger), and gives every job
that never started a ``cancelled`` row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.budget import BudgetGuard
from tasks.jobs import Job, Status, now_iso
from tasks.pacing import Pacer
from tasks.report import result_row

Row = dict[str, Any]
CANCEL_GRACE_S = 30.0  # time jobs in flight get to cancel at the endpoint and record the ledger


class JobHandler(Protocol):
    """What the pool needs from the flow: run one job, and what a job costs before it runs."""

    async def run(self, job: Job) -> Row:
        """Run ``job`` to its end and return its results row (cancellation may interrupt it)."""
        ...

    async def estimate(self, job: Job) -> float | None:
        """The job's estimated cost for the budget guard, ``None`` when it needs no budget
        (already done, or already submitted and only awaited)."""
        ...

    def interrupted_row(self, job: Job, exc: BaseException | None) -> Row:
        """Row of a job stopped in flight: ``exc`` is the crash, ``None`` means cancelled."""
        ...


def ended_row(job: Job, status: Status, code: str, reason: str, **extra: Any) -> Row:
    """A row for a job that ends without running (budget, cancelled before it started)."""
    return result_row(
        row=job.row, id=job.id, video_url=job.video_url, job_key=job.key, endpoint=job.endpoint,
        status=status, error_code=code, error=reason, attempts=0,
        estimated_cost_usd=job.estimated_cost_usd, finished_at=now_iso(), **extra,
    )  # fmt: skip


@dataclass
class PoolResult:
    rows: list[Row] = field(default_factory=list)
    cancelled: bool = False
    cancel_reason: str | None = None
    elapsed_s: float = 0.0


@dataclass
class _State:
    jobs: Iterator[Job]
    emit: Callable[[Row], None]
    stopping: bool = False
    in_flight: dict[int, Job] = field(default_factory=dict)  # worker index -> its job


async def run_pool(
    jobs: Iterable[Job],
    handler: JobHandler,
    pacer: Pacer,
    *,
    budget: BudgetGuard | None = None,
    cancel: asyncio.Event | None = None,
    on_row: Callable[[Row], None] | None = None,
    cancel_grace_s: float = CANCEL_GRACE_S,
) -> PoolResult:
    """Run every job through ``handler`` with at most ``pacer``'s cap in flight.

    Ends when all jobs have a row, or when ``cancel`` is set or this coroutine is cancelled:
    then it returns normally with ``cancelled=True`` and a row for every job, so the caller can
    still write its (partial) report.
    """
    t0 = time.perf_counter()
    result = PoolResult()
    cancel = cancel or asyncio.Event()
    guard = budget or BudgetGuard(None)

    def emit(row: Row) -> None:
        result.rows.append(row)
        if on_row is not None:
            on_row(row)

    state = _State(jobs=iter(jobs), emit=emit)
    workers = [
        asyncio.create_task(_worker(i, state, handler, pacer, guard), name=f"matteflow-worker-{i}")
        for i in range(pacer.config.max_in_flight)
    ]
    stop_waiter = asyncio.create_task(cancel.wait(), name="matteflow-cancel-watch")
    try:
        pending = set(workers)
        while pending:
            done, pending = await asyncio.wait(
                pending | {stop_waiter}, return_when=asyncio.FIRST_COMPLETED
            )
            if stop_waiter in done:
                break
            pending -= {stop_waiter}
            for task in done:
                task.result()  # a bug in the pool itself must surface, not hang the run
        if cancel.is_set():
            result.cancelled, result.cancel_reason = True, "cancel requested"
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels the main task) or Prefect cancelling the flow run.
        result.cancelled, result.cancel_reason = True, "run interrupted"
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
    finally:
        stop_waiter.cancel()
    if result.cancelled:
        await _stop(state, workers, cancel_grace_s)
        for job in state.jobs:  # never started: no request was sent for these
            emit(
                ended_row(
                    job, Status.cancelled, "cancelled", "run cancelled before this job started"
                )
            )
    result.elapsed_s = time.perf_counter() - t0
    return result


async def _stop(state: _State, workers: list[asyncio.Task[None]], grace_s: float) -> None:
    """Cancel the jobs in flight and wait (bounded) for each to record how it ended."""
    state.stopping = True
    for task in workers:
        if not task.done():
            task.cancel()
    _, stuck = await asyncio.wait(workers, timeout=grace_s) if workers else (set(), set())
    for task in stuck:
        task.cancel()
    if stuck:
        await asyncio.wait(stuck, timeout=1.0)
    for index, job in list(state.in_flight.items()):  # workers that could not finish cleanly
        state.emit(
            ended_row(job, Status.cancelled, "cancelled", "run cancelled while this job ran")
        )
        state.in_flight.pop(index, None)


async def _worker(
    index: int, state: _State, handler: JobHandler, pacer: Pacer, guard: BudgetGuard
) -> None:
    while not state.stopping:
        job = next(state.jobs, None)
        if job is None:
            return
        state.in_flight[index] = job
        try:
            row = await _one(job, handler, pacer, guard)
        except asyncio.CancelledError:
            if not state.stopping:
                raise
            row = _guarded(handler.interrupted_row, job, None)
            state.in_flight.pop(index, None)
            state.emit(row)
            return
        state.in_flight.pop(index, None)
        state.emit(row)


async def _one(job: Job, handler: JobHandler, pacer: Pacer, guard: BudgetGuard) -> Row:
    estimate = await handler.estimate(job) if guard.budget_usd is not None else None
    if estimate is not None and (reason := guard.refusal(estimate)):
        guard.refused += 1
        return ended_row(job, Status.skipped_budget, "budget_exceeded", reason)
    async with pacer.job():
        if estimate is not None and (reason := guard.reserve(estimate)):
            return ended_row(job, Status.skipped_budget, "budget_exceeded", reason)
        row: Row | None = None
        try:
            row = await handler.run(job)
        except Exception as exc:  # a bug must not lose the row: report it and go on
            row = _guarded(handler.interrupted_row, job, exc)
        finally:
            actual = float((row or {}).get("cost_usd") or 0.0)
            guard.settle(estimate or 0.0, actual)
        return row


def _guarded(make: Callable[[Job, BaseException | None], Row], job: Job, exc: Any) -> Row:
    """The handler's row for an interrupted job, or a plain one if even that fails."""
    try:
        return make(job, exc)
    except Exception as inner:
        return ended_row(
            job, Status.failed if exc else Status.cancelled, "internal_error",
            f"{type(inner).__name__}: {inner}"[:500],
        )  # fmt: skip
