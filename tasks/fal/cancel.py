"""Cancel a fal job whose run is being cancelled, and record in the ledger how it ended.

fal keeps a queued request even when nobody polls it (FACTS.md), so a cancelled run must
``PUT cancel_url`` for each of its jobs in flight. A job fal confirms as cancelled loses its
request id, so the next run submits it again; one that already completed keeps it, so the next
run fetches the result it paid for instead of paying twice.
"""

from __future__ import annotations

import asyncio

from tasks.errors import ErrorCode
from tasks.fal.job import FalRunner, cancel_quietly
from tasks.ledger.jobs import Job, JobState, Ledger, Status, now_iso
from tasks.ledger.results import ResultRow, ended_row

IN_FLIGHT = (JobState.submitted, JobState.running)
GONE = ("CANCELLATION_REQUESTED", "NOT_FOUND")


async def cancel_fal_job(job: Job, ledger: Ledger, runner: FalRunner) -> ResultRow:
    """``PUT cancel_url`` for ``job`` if fal has it, update its ledger entry, return its row."""
    entry = await asyncio.to_thread(ledger.get, job.key)
    handles = entry.fal if entry is not None else None
    if entry is None or entry.state not in IN_FLIGHT or handles is None or not handles.submission:
        return ended_row(
            job,
            Status.cancelled,
            ErrorCode.cancelled,
            "run cancelled before this job was submitted to fal.ai",
        )
    sub = handles.submission
    answer = await cancel_quietly(runner.client, sub)
    handles.cancel = answer
    if answer in GONE:
        handles.cancelled_submission, handles.submission = sub, None
        entry.state, entry.request_id = JobState.cancelled, None
        note = f"run cancelled: fal.ai request {sub.request_id} cancelled ({answer}); a re-run submits it again"
    else:
        note = (
            f"run cancelled: fal.ai answered {answer} to the cancel of request {sub.request_id};"
            " a re-run fetches its result without submitting again"
        )
    entry.error_code, entry.error = ErrorCode.cancelled, note
    await asyncio.to_thread(ledger.put, entry, event="cancelled")
    return ResultRow.from_entry(job, entry, Status.cancelled, finished_at=now_iso())
