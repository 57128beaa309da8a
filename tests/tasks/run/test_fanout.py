"""The worker pool: cap, budget, cancellation and one row per job, without any endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tasks.errors import BudgetExceeded
from tasks.ledger.jobs import Job, Status
from tasks.ledger.results import ResultRow, ended_row
from tasks.run.budget import BudgetGuard
from tasks.run.fanout import Admission, Row, run_pool
from tasks.run.pacing import Pacer, PacingConfig


def make_jobs(n: int, estimate: float = 0.0) -> list[Job]:
    return [
        Job(
            key=f"k{i:04d}",
            row=i + 1,
            id=str(i),
            video_url=f"http://x/{i}.mp4",
            endpoint="pixelcut",
            params={},
            estimated_cost_usd=estimate,
        )
        for i in range(n)
    ]


class SleepHandler:
    """Jobs that take ``seconds`` and cost ``cost``; a paid one passes the submit guard first,
    as tasks/fal/job.py does. Records concurrency and cancellations."""

    holds_slot = False

    def __init__(self, seconds: float = 0.01, cost: float = 0.0, estimate: float | None = None):
        self.seconds, self.cost, self.estimate_usd = seconds, cost, estimate
        self.running = self.peak = self.started = 0
        self.cancelled: list[str] = []
        self.admission: Admission | None = None

    async def run(self, job: Job) -> Row:
        if self.estimate_usd is not None:
            assert self.admission is not None
            try:
                async with self.admission.submit_guard(job, self.estimate_usd):
                    await asyncio.sleep(0)  # the submit
            except BudgetExceeded as exc:
                return ended_row(job, Status.skipped_budget, exc.code, exc.message)
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled.append(job.key)  # a real runner cancels its fal request here
            raise
        finally:
            self.running -= 1
        return ResultRow(
            row=job.row,
            id=job.id,
            job_key=job.key,
            endpoint=job.endpoint,
            status=Status.succeeded,
            cost_usd=self.cost,
        )

    def interrupted_row(self, job: Job, exc: BaseException | None) -> Row:
        if exc is None:
            return ended_row(job, Status.cancelled, "cancelled", "cancelled in flight")
        return ended_row(job, Status.failed, "internal_error", str(exc))


def admit(cap: int, handler: SleepHandler, budget: float | None = None) -> Admission:
    admission = Admission(
        Pacer(PacingConfig(max_in_flight=cap, submit_rate_per_s=1000.0)), BudgetGuard(budget)
    )
    handler.admission = admission
    return admission


async def test_cap_holds_and_every_job_gets_one_row() -> None:
    handler = SleepHandler(seconds=0.005)
    jobs = make_jobs(200)
    admission = admit(7, handler)
    result = await run_pool(jobs, handler, admission)
    assert handler.peak == 7 and admission.pacer.peak_in_flight == 7
    assert sorted(r["job_key"] for r in result.rows) == [j.key for j in jobs]
    assert {r["status"] for r in result.rows} == {"succeeded"}
    assert not result.cancelled


async def test_pool_spawns_no_task_per_job() -> None:
    handler = SleepHandler(seconds=0.01)
    seen: list[int] = []

    def on_row(_: Row) -> None:
        seen.append(len(asyncio.all_tasks()))

    await run_pool(make_jobs(300), handler, admit(5, handler), on_row=on_row)
    assert max(seen) <= 5 + 3  # workers + the cancel watcher + the test's own task


async def test_budget_exhaustion_mid_run_skips_the_rest() -> None:
    handler = SleepHandler(seconds=0.005, cost=0.10, estimate=0.10)
    result = await run_pool(make_jobs(20), handler, admit(2, handler, budget=0.55))
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        by_status.setdefault(row["status"], []).append(row)
    assert len(by_status["succeeded"]) == 5  # 5 x $0.10 fit in $0.55, the sixth does not
    skipped = by_status["skipped_budget"]
    assert len(skipped) == 15 and handler.started == 5
    assert all(r["error_code"] == "budget_exceeded" and "budget" in r["error"] for r in skipped)
    assert sum(r["cost_usd"] for r in result.rows) <= 0.55
    assert [r["row"] for r in by_status["succeeded"]] == [1, 2, 3, 4, 5]  # in manifest order


async def test_jobs_in_flight_are_not_cut_off_by_the_budget() -> None:
    handler = SleepHandler(seconds=0.02, cost=0.30, estimate=0.10)  # estimates too low
    result = await run_pool(make_jobs(6), handler, admit(3, handler, budget=0.25))
    ok = [r for r in result.rows if r["status"] == "succeeded"]
    assert len(ok) == 2  # both admitted ones finished, even though they overran the estimate
    assert [r["status"] for r in result.rows].count("skipped_budget") == 4


@pytest.mark.parametrize("how", ["event", "task-cancel"])
async def test_cancel_mid_run_gives_every_job_a_status(how: str) -> None:
    handler = SleepHandler(seconds=0.05)
    jobs = make_jobs(50)
    cancel = asyncio.Event()
    task = asyncio.create_task(run_pool(jobs, handler, admit(4, handler), cancel=cancel))
    while handler.started < 10:
        await asyncio.sleep(0.01)
    if how == "event":
        cancel.set()
    else:
        task.cancel()
    result = await task
    assert result.cancelled
    keys = [r["job_key"] for r in result.rows]
    assert sorted(keys) == [j.key for j in jobs]  # every job exactly once
    statuses = {r["job_key"]: r["status"] for r in result.rows}
    assert all(statuses[k] == "cancelled" for k in handler.cancelled)
    assert 1 <= len(handler.cancelled) <= 4
    not_started = [r for r in result.rows if r["error"] == "run cancelled before this job started"]
    assert len(not_started) == 50 - handler.started
    assert all(r["status"] in ("succeeded", "cancelled") for r in result.rows)


async def test_a_crashing_job_does_not_stop_the_pool() -> None:
    class Crashy(SleepHandler):
        async def run(self, job: Job) -> Row:
            if job.row == 3:
                raise RuntimeError("boom")
            return await super().run(job)

    crashy = Crashy()
    result = await run_pool(make_jobs(10), crashy, admit(2, crashy))
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert [r["row"] for r in failed] == [3] and "boom" in failed[0]["error"]
    assert len(result.rows) == 10


async def test_a_cancel_during_a_submit_waits_until_the_submit_is_recorded() -> None:
    """The worker is cancelled only after leaving the submit guard (request id in the ledger)."""
    recorded: list[str] = []
    submit_started = asyncio.Event()

    class SlowSubmit(SleepHandler):
        async def run(self, job: Job) -> Row:
            assert self.admission is not None
            async with self.admission.submit_guard(job, 0.0):
                submit_started.set()
                await asyncio.sleep(0.05)  # the POST is on the wire
                recorded.append(job.key)  # request id saved
            await asyncio.sleep(10)  # polling: cancelled here
            raise AssertionError("not reached")

    handler = SlowSubmit()
    cancel = asyncio.Event()
    task = asyncio.create_task(run_pool(make_jobs(3), handler, admit(1, handler), cancel=cancel))
    await submit_started.wait()
    cancel.set()
    result = await task
    assert recorded == ["k0000"]
    assert [r["status"] for r in result.rows] == ["cancelled"] * 3
