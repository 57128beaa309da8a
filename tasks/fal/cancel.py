"""Cancel a fal job whose run is being cancelled, keeping whatever was paid for.

fal keeps a queued request even when nobody polls it, and a request a runner already processes
keeps running, and billing, unless the app handles cancellation (FACTS.md). So a cancelled run
``PUT``s ``cancel_url`` for each of its jobs in flight and then follows the job for a short
while (inside the run's cancel grace period):

* fal finished it -> the result body is saved in the ledger: a re-run downloads it, no submit;
* fal confirms it never ran (it was still queued: COMPLETED with an error, no compute time,
  and this run never saw it IN_PROGRESS) -> the request id is dropped: a re-run submits it;
* anything else (still running, stopped by the app after it started, NOT_FOUND, no answer) ->
  the request id stays: a re-run follows it to its end and never pays for it a second time.
"""

from __future__ import annotations

import asyncio

from tasks.errors import EndpointError, ErrorCode, MatteflowError
from tasks.fal.client import CallTrace, FalClient, QueueStatus, poll_delay
from tasks.fal.saved import mark_completed, save_result
from tasks.ledger.handles import Submission
from tasks.ledger.jobs import Job, JobState, Ledger, LedgerEntry, Status, now_iso
from tasks.ledger.results import ResultRow, ended_row
from tasks.run.cpu import to_thread
from tasks.storage.store import Storage

IN_FLIGHT = (JobState.submitted, JobState.running)
REMOVED = ("CANCELLATION_REQUESTED", "OK")  # fal's answers when it took the cancel
# How long a cancelled run follows a job at fal: within tasks/run/fanout.py's CANCEL_GRACE_S.
FOLLOW_S = 12.0


async def cancel_quietly(client: FalClient, sub: Submission) -> str:
    """Best effort: a job we stop waiting for should not keep running (and billing) at fal."""
    try:
        return await client.cancel(sub.cancel_url)
    except EndpointError as exc:
        return f"cancel failed: {exc.code}"


def never_ran(answer: str, final: QueueStatus | None, seen_running: bool) -> bool:
    """Whether fal confirms a cancelled job never ran (so submitting it again pays once)."""
    if answer not in REMOVED or final is None or not final.done or not final.error:
        return False
    return not seen_running and not final.metrics.get("inference_time")


async def follow(client: FalClient, sub: Submission, follow_s: float) -> QueueStatus | None:
    """The job's status once COMPLETED, or None if it is still going after ``follow_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + follow_s
    polls = 0
    while True:
        try:
            st = await client.status(sub.status_url)
        except EndpointError:
            return None
        if st.done or loop.time() >= deadline:
            return st if st.done else None
        await client.sleep(min(poll_delay(polls, client.poll, client.rng), follow_s))
        polls += 1


async def cancel_fal_job(
    job: Job,
    ledger: Ledger,
    storage: Storage,
    client: FalClient,
    *,
    follow_s: float = FOLLOW_S,
) -> ResultRow:
    """``PUT cancel_url`` for ``job`` if fal has it, follow it, update the ledger, return its row."""
    entry = await to_thread(ledger.get, job.key)
    handles = entry.fal if entry is not None else None
    if entry is None or entry.state not in IN_FLIGHT or handles is None or not handles.submission:
        if entry is not None and entry.state is JobState.completed:
            note = "run cancelled after fal.ai finished this job: its result is saved, a re-run "
            return cancelled(job, entry, note + "downloads it without submitting again")
        if entry is not None and entry.state is JobState.submitting:
            note = "run cancelled while its submit was on the wire: fal.ai may have the job, so "
            return cancelled(job, entry, note + "a re-run reports it (submit_unknown), never pays")
        return ended_row(
            job,
            Status.cancelled,
            ErrorCode.cancelled,
            "run cancelled before this job was submitted to fal.ai",
        )
    sub = handles.submission
    seen_running = entry.state is JobState.running
    answer = handles.cancel = await cancel_quietly(client, sub)
    final = await follow(client, sub, follow_s)
    if never_ran(answer, final, seen_running):
        handles.cancelled_submission, handles.submission = sub, None
        entry.state, entry.request_id = JobState.cancelled, None
        note = f"fal.ai request {sub.request_id} cancelled before it ran; a re-run submits it"
    elif final is not None and not final.error:
        note = await keep_result(entry, ledger, storage, client, sub, final)
    else:
        still = "still running" if final is None else f"ended: {final.error}"[:200]
        note = (
            f"fal.ai answered {answer} to the cancel of request {sub.request_id} ({still}); the "
            "request id is kept: a re-run follows it and does not submit it again"
        )
    return await save_cancelled(job, entry, ledger, f"run cancelled: {note}")


async def keep_result(
    entry: LedgerEntry,
    ledger: Ledger,
    storage: Storage,
    client: FalClient,
    sub: Submission,
    final: QueueStatus,
) -> str:
    """fal finished the job after the cancel (it was paid): save its result for the re-run."""
    handles = entry.fal
    assert handles is not None
    handles.metrics = final.metrics
    mark_completed(entry)
    try:
        await save_result(entry, ledger, storage, client, sub, CallTrace())
    except MatteflowError as exc:
        return (
            f"fal.ai finished request {sub.request_id} despite the cancel, but its result could "
            f"not be saved ({exc.code}); the request id is kept for a re-run"
        )
    return (
        f"fal.ai finished request {sub.request_id} despite the cancel (it is paid): its result "
        "is saved, and a re-run downloads it without submitting again"
    )


async def save_cancelled(job: Job, entry: LedgerEntry, ledger: Ledger, note: str) -> ResultRow:
    entry.error_code, entry.error = ErrorCode.cancelled, note
    await to_thread(ledger.put, entry, event="cancelled")
    return ResultRow.from_entry(job, entry, Status.cancelled, finished_at=now_iso())


def cancelled(job: Job, entry: LedgerEntry, note: str) -> ResultRow:
    return ResultRow.from_entry(
        job, entry, Status.cancelled, error_code=ErrorCode.cancelled, error=note
    )
