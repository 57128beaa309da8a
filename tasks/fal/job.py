"""Run one job on a fal.ai endpoint against the ledger, paying for nothing twice.

ledger lookup -> reuse | claim -> ledger again -> reuse | download from the saved result |
resume (request_id known) | estimate -> guard -> submit -> persist request_id -> poll -> save the
result body -> download -> verify -> store -> ledger final.

The claim (tasks/ledger/claims.py) makes this run the only one working on the job. The
request_id is in the ledger before the first poll, so a killed run resumes its jobs instead of
submitting them again; the result body is in the ledger before the first download, so a result
fal has since dropped is still downloaded. A submit whose outcome is unknown leaves the entry in
``submitting``: the next run reports it (``submit_unknown``) and submits it again only when told
to. A cancel (Ctrl-C, the UI) is handled here, under the claim (tasks/fal/cancel.py).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tasks.endpoints import EndpointInfo
from tasks.errors import (
    AuthError,
    BudgetExceeded,
    EndpointError,
    ErrorCode,
    InputError,
    MatteflowError,
    StorageError,
    SubmitOutcomeUnknown,
)
from tasks.fal.cancel import cancel_fal_job, cancel_quietly
from tasks.fal.client import CallTrace, FalClient, QueueStatus
from tasks.fal.expect import fal_expectation
from tasks.fal.saved import fetch_file, mark_completed, save_result, saved_result
from tasks.fal.status import StatusWatch
from tasks.fal.uploads import upload_file
from tasks.ledger.claims import ClaimHeld, ClaimOwner, Claims, ClaimSettings, HeldClaim, held_claim
from tasks.ledger.handles import FalFile, FalHandles, FalResult, Submission
from tasks.ledger.jobs import Job, JobState, Ledger, LedgerEntry, Status, now_iso, safe_stem
from tasks.ledger.results import ResultRow, ended_row
from tasks.ledger.reuse import reusable, skipped_row
from tasks.media.facts import VideoFacts, read_video_facts
from tasks.media.inputs import local_path, readable_location
from tasks.media.preflight import InputSettings, check_limits, check_remote, sniff_file
from tasks.media.verify import (
    Expectation,
    VerifyReport,
    VerifySettings,
    probe,
    verify_mask,
    verify_output,
)
from tasks.retry import acall_with_backoff
from tasks.run.cost import Price, cost_usd
from tasks.run.cpu import CpuMeter, current_cpu_s, metered, to_thread
from tasks.storage.store import Storage, redact_url

# A submit guard wraps the submit step (pacing, budget: issue 5). It may raise BudgetExceeded.
SubmitGuard = Callable[[Job, float], AbstractAsyncContextManager[Any]]
# An endpoint slot is held from just before the submit until fal reports the job COMPLETED
# (issue 5): the cap counts jobs at fal, while probing, downloading and verifying overlap.
EndpointSlot = Callable[[Job], AbstractAsyncContextManager[Any]]
# fal itself failed the job (or forgot it): a re-run submits it again only with retry_failed.
FAL_FAILED = frozenset(
    {
        ErrorCode.fal_job_error,
        ErrorCode.fal_validation_error,
        ErrorCode.fal_bad_result,
        ErrorCode.fal_request_not_found,
    }
)
NOT_SUBMITTED = (
    "run cancelled (waiting for its claim, or again while it was being cancelled); any fal.ai "
    "request of this job stays in the ledger for the next run"
)


class FalRunner:
    """What every fal job of one flow run shares: built once per run, closed at its end."""

    def __init__(
        self,
        client: FalClient,
        info: EndpointInfo,
        price: Price,
        *,
        resubmit_unknown: bool = False,
        retry_failed: bool = False,
        input_storage_options: dict[str, Any] | None = None,
        submit_guard: SubmitGuard | None = None,
        input_limits: InputSettings | None = None,
        endpoint_slot: EndpointSlot | None = None,
        verify: VerifySettings | None = None,
        resubmit_expired: bool = False,
        claims: ClaimSettings | None = None,
        owner: ClaimOwner | None = None,
    ) -> None:
        if info.fal_app is None or info.build_arguments is None:
            raise ValueError(f"{info.name} is not a fal endpoint")
        self.client = client
        self.info = info
        self.app: str = info.fal_app
        self.price = price
        self.resubmit_unknown = resubmit_unknown
        self.retry_failed = retry_failed
        self.input_storage_options = input_storage_options
        self.submit_guard = submit_guard
        self.input_limits = input_limits or InputSettings()
        self.endpoint_slot = endpoint_slot
        self.verify = verify or VerifySettings()
        self.resubmit_expired = resubmit_expired
        self.claim_settings = claims or ClaimSettings()
        self.owner = owner or ClaimOwner(run="matteflow")

    def claims(self, storage: Storage) -> Claims:
        return Claims(storage, self.owner, self.claim_settings)

    async def hold_slot(self, job: Job, held: AsyncExitStack) -> None:
        """Take this job's endpoint slot until ``held`` closes (after fal's COMPLETED)."""
        if self.endpoint_slot is not None:
            await held.enter_async_context(self.endpoint_slot(job))

    async def aclose(self) -> None:
        await self.client.aclose()


# -- inputs ---------------------------------------------------------------------------------


async def probe_location(job: Job, runner: FalRunner) -> str:
    """Where the input can be read for probing (a path or a URL; presigned for s3)."""
    expiry = runner.client.settings.presign_expiry_s
    return await to_thread(readable_location, job.video_url, expiry, runner.input_storage_options)


PROBE_ATTEMPTS = 3


def probe_worth_retrying(location: str, exc: BaseException) -> bool:
    """A remote input's host may refuse a moment (429/5xx/reset); a local file will not change."""
    return isinstance(exc, InputError) and local_path(location) is None


async def probe_with_retries(location: str, runner: FalRunner) -> VideoFacts:
    """The input's header facts, read again (with the fal client's backoff) while it refuses."""
    client = runner.client
    return await acall_with_backoff(
        lambda: to_thread(read_video_facts, location),
        replace(client.retry, attempts=PROBE_ATTEMPTS),
        transient=lambda exc: probe_worth_retrying(location, exc),
        sleep=client.sleep,
        rng=client.rng,
    )


def check_reachable(job: Job, runner: FalRunner) -> None:
    """Refuse a local input before anything is reserved or sent when uploads are off."""
    path = local_path(job.video_url)
    if path is not None and not runner.client.settings.uploads:
        raise InputError(
            f"{path} is a local file, which fal.ai cannot read, and uploads to fal's storage "
            "are off: put it on http(s) or s3://, or allow uploads (--fal-uploads, or "
            "MATTEFLOW_FAL_UPLOADS=true)",
            code=ErrorCode.upload_disabled,
        )


async def fal_input_url(job: Job, location: str, runner: FalRunner, trace: CallTrace) -> str:
    """A URL fal can fetch: http(s) as is, s3 presigned, local files uploaded."""
    path = local_path(job.video_url)
    if path is None:
        return location
    check_reachable(job, runner)
    return await upload_file(runner.client, path, trace=trace)


def precheck(location: str, limits: InputSettings, ask_server: bool) -> int | None:
    """Refuse, before anything is paid, an input that is missing, forbidden, a web page, empty
    or too big; returns its size where known."""
    if ask_server:
        return check_remote(location, limits)
    path = local_path(location)
    return sniff_file(path, limits) if path is not None else None


def check_probe_limits(
    probed: VideoFacts, size: int | None, limits: InputSettings, shown: str
) -> None:
    """The input limits, with the size the server stated when the container did not say."""
    check_limits(replace(probed, bytes=size or probed.bytes), limits, shown)


def estimate_usd(price: Price, probed: VideoFacts) -> float:
    return cost_usd(price, frames=probed.frames, compute_s=price.compute_seconds(probed.frames))


# -- outputs --------------------------------------------------------------------------------


def suffix_of(file: FalFile, default: str) -> str:
    name = file.file_name or urlsplit(file.url).path
    suffix = Path(name).suffix.lower()
    return suffix if suffix and len(suffix) <= 6 else default


# -- the job --------------------------------------------------------------------------------


def fal_handles(entry: LedgerEntry) -> FalHandles:
    """The handles of a job fal accepted (its entry has them from the moment of the submit)."""
    assert entry.fal is not None
    return entry.fal


def submission_of(entry: LedgerEntry) -> Submission:
    sub = fal_handles(entry).submission
    assert sub is not None
    return sub


async def save(ledger: Ledger, entry: LedgerEntry, event: str) -> None:
    await to_thread(ledger.put, entry, event=event)


async def submit_job(
    job: Job,
    entry: LedgerEntry,
    ledger: Ledger,
    runner: FalRunner,
    trace: CallTrace,
    held: AsyncExitStack | None = None,
    claim: HeldClaim | None = None,
) -> Submission:
    """Estimate, pass the guard, then submit once; the request_id is stored before returning.

    The claim is renewed right before the submit: a run that lost it does not submit."""
    check_reachable(job, runner)
    location = await probe_location(job, runner)
    ask = urlsplit(job.video_url).scheme in ("http", "https")  # not presigned s3 URLs
    size = await to_thread(precheck, location, runner.input_limits, ask)
    probed = await probe_with_retries(location, runner)
    check_probe_limits(probed, size, runner.input_limits, redact_url(location))
    entry.metrics["input"] = probed.as_dict()
    entry.estimated_cost_usd = estimate_usd(runner.price, probed)
    if held is not None:
        await runner.hold_slot(job, held)
    guard = runner.submit_guard(job, entry.estimated_cost_usd) if runner.submit_guard else None
    async with guard or nullcontext():
        url = await fal_input_url(job, location, runner, trace)
        options = runner.info.options(job.params)
        assert runner.info.build_arguments is not None
        arguments = runner.info.build_arguments(options, url)
        if claim is not None:
            await claim.confirm()
        entry.state, entry.request_id = JobState.submitting, None
        entry.error_code = entry.error = None
        entry.attempts += 1
        await save(ledger, entry, "submitting")
        sub = await runner.client.submit(runner.app, arguments, trace=trace)
        trace.submitted = True
        entry.metrics.pop("possibly_billed_usd", None)  # an earlier submission's, not this one's
        entry.state, entry.request_id = JobState.submitted, sub.request_id
        sub = sub.model_copy(update={"submitted_at": now_iso()})
        entry.fal = FalHandles(app=runner.app, submission=sub)
        await save(ledger, entry, "submitted")
    return sub


def failed_verification(entry: LedgerEntry, code: ErrorCode | None, error: str | None) -> Status:
    entry.state = JobState.failed_verification
    entry.error_code, entry.error = code, error
    return Status.failed_verification


async def bring_home(
    job: Job,
    entry: LedgerEntry,
    storage: Storage,
    runner: FalRunner,
    outputs: FalResult,
    trace: CallTrace,
) -> Status:
    """Download (from the saved result), verify and store the outputs; set the actual cost."""
    assert outputs.video is not None
    options = runner.info.options(job.params)
    expected = fal_expectation(runner.info, options, entry.metrics.get("input"), outputs.video)
    spec = expected.spec
    stem = safe_stem(job.id, job.key)
    with tempfile.TemporaryDirectory(prefix="matteflow-fal-") as tmp:
        out = Path(tmp) / f"video{spec.extension}"
        report = await fetch_and_verify(
            entry, runner, outputs.video, out, expected, trace, storage=storage
        )
        entry.cost_usd = actual_cost(
            runner.price, report.probe.frames if report.probe else 0, fal_handles(entry).metrics
        )
        if not report.ok:
            return failed_verification(entry, report.error_code, report.error)
        mask_rel = None
        if outputs.mask_video is not None:
            mask = Path(tmp) / f"mask{suffix_of(outputs.mask_video, '.mp4')}"
            await fetch_file(runner.client, outputs.mask_video, mask, trace, storage)
            refusal = await mask_refusal(out, mask, expected.frames, runner)
            if refusal is not None:
                return failed_verification(entry, *refusal)
            mask_rel = f"videos/{stem}.mask{mask.suffix}"
            await to_thread(storage.put_file, mask, mask_rel)
        rel = f"videos/{stem}{spec.extension}"
        await to_thread(storage.put_file, out, rel)
    entry.output_path, entry.output_url = rel, storage.url(rel)
    if mask_rel is not None:
        entry.mask_path, entry.mask_url = mask_rel, storage.url(mask_rel)
    entry.state = JobState.succeeded
    return Status.succeeded


async def fetch_and_verify(
    entry: LedgerEntry,
    runner: FalRunner,
    video: FalFile,
    out: Path,
    expected: Expectation,
    trace: CallTrace,
    storage: Storage | None = None,
) -> VerifyReport:
    """Download the output video whole, verify it, and record what was found in ``entry``."""
    size, sha = await fetch_file(runner.client, video, out, trace, storage)
    if video.file_size is not None and size != video.file_size:
        raise EndpointError(
            f"download truncated: {size} of {video.file_size} bytes",
            code=ErrorCode.fal_download_failed,
        )
    t_verify = time.perf_counter()
    report = await to_thread(verify_output, out, expected, runner.verify, sha256=sha)
    entry.metrics["verify_s"] = round(time.perf_counter() - t_verify, 3)
    entry.verification = report.as_dict()
    entry.bytes, entry.sha256 = size, sha
    found = report.probe
    entry.metrics.update(
        output_format=expected.spec.name.value,
        frames=found.frames if found else None,
        width=found.width if found else None,
        height=found.height if found else None,
        fps=found.fps if found else None,
        duration_s=found.duration_s if found else None,
    )
    return report


async def mask_refusal(
    out: Path, mask: Path, frames: int | None, runner: FalRunner
) -> tuple[ErrorCode, str] | None:
    """(code, reason) when the mask video does not decode or disagrees with the output."""
    try:
        mask_probe = await to_thread(probe, mask)
    except Exception as exc:  # PyAV raises many types for a broken file
        return ErrorCode.mask_undecodable, f"mask video does not decode: {type(exc).__name__}"
    if frames is not None and mask_probe.frames != frames:
        return ErrorCode.mask_frame_count, f"mask has {mask_probe.frames} frames, expected {frames}"
    disagree = await to_thread(verify_mask, out, mask, runner.verify)
    if disagree:
        return ErrorCode(disagree[0][0]), "; ".join(text for _, text in disagree)
    return None


def actual_cost(price: Price, frames: int, metrics: dict[str, Any]) -> float:
    """Frames of the output for per-frame prices; fal's reported compute time where given."""
    compute = metrics.get("inference_time")
    compute_s = (
        float(compute) if isinstance(compute, int | float) else price.compute_seconds(frames)
    )
    return cost_usd(price, frames=frames, compute_s=compute_s)


def resumable(entry: LedgerEntry | None, runner: FalRunner) -> bool:
    """A job fal accepted is polled again, unless fal itself failed it (or dropped its unread
    result) and the run explicitly asks to pay for it again."""
    if entry is None or entry.request_id is None or entry.fal is None:
        return False
    if entry.fal.submission is None:
        return False
    if entry.state is not JobState.failed:
        return True
    if runner.retry_failed and entry.error_code in FAL_FAILED:
        return False
    return not (runner.resubmit_expired and entry.error_code == ErrorCode.fal_result_expired)


async def run_fal_job(job: Job, storage: Storage, runner: FalRunner) -> ResultRow:
    """Process ``job`` on fal unless the ledger says it is done; returns its results row.

    ``AuthError`` propagates (the run must stop); every other failure ends in the row. Storage
    that stays away past its retries fails the row; the ledger keeps the request_id it had, so a
    later run fetches the result again instead of paying for a second job. Another run holding
    the job's claim past the wait ends the row ``claimed_elsewhere``; a cancel ends it
    ``cancelled`` (after ``cancel_fal_job`` when this run had the job at fal).
    """
    started_at, t0 = now_iso(), time.perf_counter()

    def ended(status: Status, code: ErrorCode, error: str) -> ResultRow:
        elapsed_s = round(time.perf_counter() - t0, 3)
        return ended_row(job, status, code, error, started_at=started_at, elapsed_s=elapsed_s)

    meter = CpuMeter()  # this job's client CPU: its event-loop steps and its worker threads
    try:
        row = await metered(_run_fal_job(job, storage, runner, t0), meter)
    except (StorageError, ClaimHeld) as exc:
        row = ended(Status.failed, exc.code, exc.message)
    except asyncio.CancelledError:
        return ended(Status.cancelled, ErrorCode.cancelled, NOT_SUBMITTED)
    row.cpu_s = meter.total_s
    return row


async def _run_fal_job(job: Job, storage: Storage, runner: FalRunner, t0: float) -> ResultRow:
    ledger = Ledger(storage)
    started_at = now_iso()
    entry = await to_thread(ledger.get, job.key)
    if await to_thread(reusable, entry, storage):
        assert entry is not None
        return skipped_row(job, entry, started_at, t0)
    async with held_claim(runner.claims(storage), job.key) as claim:
        # Read again under the claim: another run may have finished the job meanwhile.
        entry = await to_thread(ledger.get, job.key)
        if await to_thread(reusable, entry, storage):
            assert entry is not None
            return skipped_row(job, entry, started_at, t0)
        if entry is None:
            entry = LedgerEntry(
                key=job.key,
                endpoint=job.endpoint,
                video_url=redact_url(job.video_url),
                params=job.params,
            )
        trace = CallTrace()
        try:
            status = await attempt(job, entry, ledger, storage, runner, trace, claim)
        except asyncio.CancelledError:
            return await cancel_fal_job(job, ledger, storage, runner.client)
        entry.metrics["fal_retries"] = int(entry.metrics.get("fal_retries", 0)) + trace.retries
        seen = set(entry.metrics.get("fal_error_types", [])) | set(trace.error_types)
        entry.metrics["fal_error_types"] = sorted(seen)
        entry.metrics["cpu_s"] = current_cpu_s()
        await save(ledger, entry, status.value)
    billed = entry.metrics.get("possibly_billed_usd", 0.0) if trace.submitted else 0.0
    return ResultRow.from_entry(
        job,
        entry,
        status,
        possibly_billed_usd=billed,
        started_at=started_at,
        finished_at=now_iso(),
        elapsed_s=round(time.perf_counter() - t0, 3),
    )


async def attempt(
    job: Job,
    entry: LedgerEntry,
    ledger: Ledger,
    storage: Storage,
    runner: FalRunner,
    trace: CallTrace,
    claim: HeldClaim | None = None,
) -> Status:
    """Submit (or resume) the job, wait for fal, save its result, bring the output home;
    returns the row status. A result saved by an earlier run is downloaded, not asked for.

    ``AuthError`` propagates (the run must stop); every other failure is recorded in ``entry``.
    """
    try:
        outputs = saved_result(entry) if resumable(entry, runner) else None
        if outputs is None:
            outputs = await result_from_fal(job, entry, ledger, storage, runner, trace, claim)
        else:
            entry.error_code = entry.error = None
            await save(ledger, entry, "download_saved_result")
        return await bring_home(job, entry, storage, runner, outputs, trace)
    except AuthError as exc:
        if entry.state is JobState.submitting:  # fal refused the submit: nothing was queued
            entry.state = JobState.failed
        entry.note_error(exc)
        await save(ledger, entry, "auth_error")
        raise
    except ClaimHeld:
        raise  # another run owns the entry now: this run writes nothing more to it
    except BudgetExceeded as exc:
        entry.note_error(exc)
        return Status.skipped_budget
    except SubmitOutcomeUnknown as exc:
        entry.note_error(exc, JobState.submitting)
    except MatteflowError as exc:
        entry.note_error(exc, JobState.failed)
        if isinstance(exc, EndpointError) and exc.error_type:
            trace.error_types.append(exc.error_type)
            if exc.error_type not in exc.message:
                entry.error = f"{exc.message} [X-Fal-Error-Type: {exc.error_type}]"
        note_possible_billing(entry, trace)
    return Status.failed


def note_possible_billing(entry: LedgerEntry, trace: CallTrace) -> None:
    """fal's FAQ: invalid inputs (422) may still be charged, server errors (5xx) never are; a
    422 of a job this run submitted counts its estimate as possibly billed (the
    ``possibly_billed_usd`` column, the budget)."""
    if trace.submitted and entry.error_code == ErrorCode.fal_validation_error:
        entry.metrics["possibly_billed_usd"] = entry.estimated_cost_usd or 0.0


async def result_from_fal(
    job: Job,
    entry: LedgerEntry,
    ledger: Ledger,
    storage: Storage,
    runner: FalRunner,
    trace: CallTrace,
    claim: HeldClaim | None,
) -> FalResult:
    """Submit or resume, wait until COMPLETED, and save the result body in the ledger at once."""
    async with AsyncExitStack() as held:
        sub = await submission_for(job, entry, ledger, runner, trace, held, claim)
        final = await wait_for(entry, ledger, runner, sub, trace)
    fal_handles(entry).metrics = final.metrics
    if final.error:
        raise EndpointError(
            f"fal.ai job failed: {final.error}"[:500],
            code=ErrorCode.fal_job_error,
            error_type=final.error_type,
        )
    mark_completed(entry)
    return await save_result(entry, ledger, storage, runner.client, sub, trace)


async def submission_for(
    job: Job,
    entry: LedgerEntry,
    ledger: Ledger,
    runner: FalRunner,
    trace: CallTrace,
    held: AsyncExitStack,
    claim: HeldClaim | None = None,
) -> Submission:
    """The job's fal request: resumed from the ledger, or submitted now. A submit whose outcome
    is unknown is never repeated unless the run says so (fal has no idempotency key)."""
    if resumable(entry, runner):
        await runner.hold_slot(job, held)
        sub = submission_of(entry)
        entry.error_code = entry.error = None
        await save(ledger, entry, "resumed")
        return sub
    if entry.state is JobState.submitting and not runner.resubmit_unknown:
        raise SubmitOutcomeUnknown(
            "an earlier submit of this job may or may not have reached fal.ai; check the "
            "fal dashboard (requests of this app), then re-run with --resubmit-unknown"
        )
    return await submit_job(job, entry, ledger, runner, trace, held, claim)


async def wait_for(
    entry: LedgerEntry, ledger: Ledger, runner: FalRunner, sub: Submission, trace: CallTrace
) -> QueueStatus:
    """Wait for fal's COMPLETED (stream, else polls); a job that outlives its timeout is
    cancelled there. How the completion was seen goes into the entry's metrics."""

    async def on_status(st: QueueStatus) -> None:
        if st.status == "IN_PROGRESS" and entry.state is not JobState.running:
            entry.state = JobState.running
            await save(ledger, entry, "running")

    watch = StatusWatch()
    try:
        return await runner.client.wait(
            sub.status_url, trace=trace, on_status=on_status, watch=watch
        )
    except EndpointError as exc:
        if exc.code == ErrorCode.fal_timeout:
            fal_handles(entry).cancel = await cancel_quietly(runner.client, sub)
        raise
    finally:
        entry.metrics.update(watch.as_metrics())
