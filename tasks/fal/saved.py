"""Result handles saved at once: a paid output is never known only to fal.

fal keeps a result 1 h (6 min when it is 10 KB or larger) and a ``sync_mode`` result not at all
(FACTS.md). So the moment fal says COMPLETED, the result body (output URLs, file names, sizes,
metadata) goes into the job's ledger entry, before any download; inline outputs (data URIs) are
written to the output storage first (``staged/{key}/``), since the ledger cannot hold them. A
later run downloads from what was saved and never asks fal for the job again.
"""

from __future__ import annotations

import base64
from pathlib import Path

from pydantic import ValidationError

from tasks.errors import EndpointError, ErrorCode
from tasks.fal.client import CallTrace, FalClient
from tasks.fal.files import FalOutputs, parse_outputs
from tasks.ledger.handles import FalFile, FalHandles, FalResult, Submission
from tasks.ledger.jobs import JobState, Ledger, LedgerEntry, now_iso
from tasks.run.cpu import to_thread
from tasks.storage.store import Storage, sha256_file

EXPIRED_STATUSES = (404, 410)
SAVED_COPY = "saved_copy"  # FalFile extra: where an inline output was written in storage


def outputs_of(result: dict[str, object]) -> FalOutputs:
    try:
        return parse_outputs(result)
    except ValidationError as exc:
        raise EndpointError(
            "fal.ai result has no video output", code=ErrorCode.fal_bad_result
        ) from exc


def result_expired(entry: LedgerEntry, sub: Submission) -> EndpointError:
    """The row error for a paid result fal no longer has: request id, time, how to recover."""
    handles = entry.fal or FalHandles()
    when = handles.completed_at or sub.submitted_at or "an earlier run"
    app = handles.app or entry.endpoint
    return EndpointError(
        f"fal.ai no longer has the result of request {sub.request_id} (completed {when}): fal "
        "keeps a result 1 h (6 min when 10 KB or larger; sync_mode results not at all). The "
        f"job was paid: open fal's dashboard, app {app}, Requests, find {sub.request_id} and "
        "download its output; or re-run with --resubmit-expired to pay for a new one",
        code=ErrorCode.fal_result_expired,
        status_code=404,
    )


def stage_inline(storage: Storage, key: str, name: str, file: FalFile) -> FalFile:
    """The ledger's copy of ``file``; an inline (data URI) output is first written to storage."""
    if not file.url.startswith("data:"):
        return file.stored()
    _, _, payload = file.url.partition(",")
    suffix = Path(file.file_name or "").suffix[:8] or ".bin"
    rel = f"staged/{key}/{name}{suffix}"
    storage.write_bytes(rel, base64.b64decode(payload))
    return FalFile.model_validate({**file.metadata(), SAVED_COPY: rel})


async def save_result(
    entry: LedgerEntry,
    ledger: Ledger,
    storage: Storage,
    client: FalClient,
    sub: Submission,
    trace: CallTrace,
) -> FalResult:
    """Fetch the result body of a COMPLETED job and save it in the ledger before any download."""
    try:
        body = await client.result(sub.response_url, trace=trace)
    except EndpointError as exc:
        if exc.code == ErrorCode.fal_http_error and exc.status_code in EXPIRED_STATUSES:
            raise result_expired(entry, sub) from exc
        raise
    outputs = outputs_of(body)
    video = await to_thread(stage_inline, storage, entry.key, "video", outputs.video)
    mask = None
    if outputs.mask_video is not None:
        mask = await to_thread(stage_inline, storage, entry.key, "mask", outputs.mask_video)
    handles = entry.fal = entry.fal or FalHandles()
    handles.result = FalResult(video=video, mask_video=mask)
    entry.state = JobState.completed
    await to_thread(ledger.put, entry, event="result_saved")
    return handles.result


def saved_result(entry: LedgerEntry | None) -> FalResult | None:
    """The saved result a run can download from (None when there is none, or it was inline and
    not kept: entries written before results were saved at once)."""
    handles = entry.fal if entry is not None else None
    result = handles.result if handles is not None else None
    if result is None or result.video is None or not fetchable(result.video):
        return None
    if result.mask_video is not None and not fetchable(result.mask_video):
        return None
    return result


def fetchable(file: FalFile) -> bool:
    return not file.url.startswith("data:") or bool((file.model_extra or {}).get(SAVED_COPY))


async def fetch_file(
    client: FalClient,
    file: FalFile,
    dest: Path,
    trace: CallTrace,
    storage: Storage | None = None,
) -> tuple[int, str]:
    """Bring one output home: from fal's CDN, from its saved copy, or inline from the result."""
    copy = (file.model_extra or {}).get(SAVED_COPY)
    if copy and storage is not None:
        data = await to_thread(storage.read_bytes, str(copy))
        if data is None:
            raise EndpointError(
                f"the saved copy {copy} of an inline output is missing",
                code=ErrorCode.fal_download_failed,
            )
        dest.write_bytes(data)
        return dest.stat().st_size, sha256_file(dest)
    if file.url.startswith("data:"):
        _, _, payload = file.url.partition(",")
        dest.write_bytes(base64.b64decode(payload))
        return dest.stat().st_size, sha256_file(dest)
    return await client.download(file.url, dest, trace=trace)


def mark_completed(entry: LedgerEntry) -> None:
    """Note when this run first saw fal's COMPLETED (the time a result-expiry error names)."""
    handles = entry.fal = entry.fal or FalHandles()
    handles.completed_at = handles.completed_at or now_iso()
