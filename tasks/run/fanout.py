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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.errors import BudgetExceeded, ErrorCode
from tasks.ledger.jobs import Job, Status
from tasks.ledger.results import ResultRow, ended_row
from tasks.run.budget import BudgetGuard
from tasks.run.pacing import Pacer

Row = ResultRow
# Time jobs in flight get to cancel at the endpoint and record the ledger; below the 30 s a
# Prefect worker waits after its SIGTERM before it kills a cancelled flow run's process.
CANCEL_GRACE_S = 20.0
NOT_STARTED = "run cancelled before this job started"


class JobHandler(Protocol):
    """What the pool needs from the flow: run one job, and a row for one that was stopped.

    ``holds_slot`` False: the pool holds the in-flight slot for the whole job (local engine).
    True: the runner holds it only while the job is at the endpoint (``Admission.slot``), and
    the pool runs extra workers so probing, downloading and verifying overlap with it.
    """

    holds_slot: bool

    async def run(self, job: Job) -> Row:
        """Run ``job`` to its end and return its results row (cancellation may interrupt it)."""
        ...

    def interrupted_row(self, job: Job, exc: BaseException | None) -> Row:
        """Row of a job stopped in flight: ``exc`` is the crash, ``None`` means cancelled."""
        ...


class Admission:
    """The step right before a paid submit: budget, submit rate, and no cancel mid-submit.

    ``submit_guard`` is what a runner wraps around its submit (tasks/fal/job.py); a cancel that
    arrives while a submit is on the wire waits until the request id is in the ledger, so no
    job is left queued at fal without a way to cancel or resume it.
    """

    def __init__(self, pacer: Pacer, budget: BudgetGuard | None = None) -> None:
        self.pacer = pacer
        self.budget = budget or BudgetGuard(None)
        self.submitting: set[asyncio.Task[Any]] = set()
        self.cancel_after_submit: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def submit_guard(self, job: Job, estimate_usd: float) -> AsyncIterator[None]:
        reason = self.budget.reserve(job.key, estimate_usd)
        if reason is not None:
            raise BudgetExceeded(reason)
        await self.pacer.submit_token()
        task = asyncio.current_task()
        assert task is not None
        self.submitting.add(task)
        try:
            yield
        finally:
            self.submitting.discard(task)
            if task in self.cancel_after_submit:
                self.cancel_after_submit.discard(task)
                task.cancel()

    def slot(self, job: Job) -> AbstractAsyncContextManager[None]:
        """The endpoint slot a runner holds from its submit until the endpoint is done."""
        return self.pacer.job()

    def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel a worker now, or as soon as its submit has been recorded."""
        if task in self.submitting:
            self.cancel_after_submit.add(task)
        else:
            task.cancel()


@dataclass
class PoolResult:
    rows: list[Row] = field(default_factory=list)
    cancelled: bool = False
    cancel_reason: str | None = None
    elapsed_s: float = 0.0
    failure: BaseException | None = None  # the fatal error that stopped the run, if any


@dataclass
class _State:
    jobs: Iterator[Job]
    emit: Callable[[Row], None]
    admission: Admission
    fatal: tuple[type[BaseException], ...] = ()
    stopping: bool = False
    stop_reason: str | None = None  # the fatal error's message, added to interrupted rows
    in_flight: dict[int, Job] = field(default_factory=dict)  # worker index -> its job


async def run_pool(
    jobs: Iterable[Job],
    handler: JobHandler,
    admission: Admission,
    *,
    cancel: asyncio.Event | None = None,
    on_row: Callable[[Row], None] | None = None,
    cancel_grace_s: float = CANCEL_GRACE_S,
    fatal: tuple[type[BaseException], ...] = (),
    raise_fatal: bool = True,
) -> PoolResult:
    """Run every job through ``handler`` with at most the pacer's cap in flight.

    Ends when all jobs have a row, or when ``cancel`` is set or this coroutine is cancelled:
    then it returns normally with ``cancelled=True`` and a row for every job, so the caller can
    still write its (partial) report. A job raising one of ``fatal`` stops every job: its own
    row says why, the jobs not started end ``cancelled`` with that reason, and the error is
    raised again (or, with ``raise_fatal=False``, returned in ``failure`` once every row is in,
    so the caller can write the report first).
    """
    t0 = time.perf_counter()
    result = PoolResult()

    def emit(row: Row) -> None:
        if state.stop_reason and row.status is Status.cancelled:  # every row says why
            row = row.model_copy(update={"error": _why(row.error or "cancelled", state)})
        admission.budget.settle(str(row.job_key), row.cost_usd + row.possibly_billed_usd)
        result.rows.append(row)
        if on_row is not None:
            on_row(row)

    state = _State(jobs=iter(jobs), emit=emit, admission=admission, fatal=fatal)
    workers = _start_workers(state, handler)
    failure = await _wait_for_workers(workers, cancel or asyncio.Event(), result)
    if result.cancelled:
        state.stop_reason = None if failure is None else f"the run stopped: {failure}"
        await _stop(state, workers, cancel_grace_s)
        for job in state.jobs:  # never started: no request was sent for these
            emit(ended_row(job, Status.cancelled, ErrorCode.cancelled, NOT_STARTED))
    result.elapsed_s = time.perf_counter() - t0
    result.failure = failure
    if failure is not None and raise_fatal:
        raise failure
    return result


def _start_workers(state: _State, handler: JobHandler) -> list[asyncio.Task[None]]:
    """The cap's worth of workers, plus prefetchers when the runner holds the slot itself."""
    cap = state.admission.pacer.config.max_in_flight
    count = cap + prefetch_workers(cap) if handler.holds_slot else cap
    return [
        asyncio.create_task(_worker(i, state, handler), name=f"matteflow-worker-{i}")
        for i in range(count)
    ]


async def _wait_for_workers(
    workers: list[asyncio.Task[None]], cancel: asyncio.Event, result: PoolResult
) -> BaseException | None:
    """Wait until every worker is done, a cancel is asked for, or a worker fails.

    Marks ``result`` cancelled when the pool must stop early; returns the failure, if any.
    """
    failure: BaseException | None = None
    stop_waiter = asyncio.create_task(cancel.wait(), name="matteflow-cancel-watch")
    try:
        pending: set[asyncio.Future[Any]] = set(workers)
        while pending:
            done, pending = await asyncio.wait(
                pending | {stop_waiter}, return_when=asyncio.FIRST_COMPLETED
            )
            if stop_waiter in done:
                break
            pending.discard(stop_waiter)
            failure = next((t.exception() for t in done if t.exception() is not None), None)
            if failure is not None:  # fatal for the run, or a bug in the pool itself
                break
        if cancel.is_set() or failure is not None:
            result.cancelled, result.cancel_reason = True, "cancel requested"
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels the main task) or Prefect cancelling the flow run.
        result.cancelled, result.cancel_reason = True, "run interrupted"
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
    finally:
        stop_waiter.cancel()
    return failure


async def _stop(state: _State, workers: list[asyncio.Task[None]], grace_s: float) -> None:
    """Cancel the jobs in flight and wait (bounded) for each to record how it ended."""
    state.stopping = True
    for task in workers:
        if not task.done():
            state.admission.cancel(task)
    _, stuck = await asyncio.wait(workers, timeout=grace_s) if workers else (set(), set())
    for task in stuck:
        task.cancel()
    if stuck:
        await asyncio.wait(stuck, timeout=1.0)
    for index, job in list(state.in_flight.items()):  # workers that could not finish cleanly
        text = "run cancelled while this job ran"
        state.emit(ended_row(job, Status.cancelled, ErrorCode.cancelled, text))
        state.in_flight.pop(index, None)


def prefetch_workers(cap: int) -> int:
    """Workers beyond the cap: they probe the next inputs and bring finished outputs home."""
    return max(2, cap // 2)


async def _worker(index: int, state: _State, handler: JobHandler) -> None:
    pacer = state.admission.pacer
    while not state.stopping:
        job = next(state.jobs, None)
        if job is None:
            return
        state.in_flight[index] = job
        try:
            async with nullcontext() if handler.holds_slot else pacer.job():
                try:
                    row = await handler.run(job)
                except state.fatal as exc:  # the job's own row says why the run stops
                    state.in_flight.pop(index, None)
                    code = getattr(exc, "code", ErrorCode.internal_error)
                    state.emit(ended_row(job, Status.failed, code, str(exc), attempts=1))
                    raise
                except Exception as exc:  # a bug must not lose the row: report it and go on
                    row = _guarded(handler.interrupted_row, job, exc)
        except asyncio.CancelledError:
            if not state.stopping:
                raise
            row = _guarded(handler.interrupted_row, job, None)
            state.in_flight.pop(index, None)
            state.emit(row)
            return
        state.in_flight.pop(index, None)
        state.emit(row)


def _why(text: str, state: _State) -> str:
    """A cancelled row's error, with the reason the run stopped when a fatal error stopped it."""
    if not state.stop_reason or state.stop_reason in text:
        return text
    return f"{text}: {state.stop_reason}"[:500]


def _guarded(make: Callable[[Job, BaseException | None], Row], job: Job, exc: Any) -> Row:
    """The handler's row for an interrupted job, or a plain one if even that fails."""
    try:
        return make(job, exc)
    except Exception as inner:
        return ended_row(
            job,
            Status.failed if exc else Status.cancelled,
            ErrorCode.internal_error,
            f"{type(inner).__name__}: {inner}"[:500],
        )
