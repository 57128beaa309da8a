"""Run one local-engine job end to end against the ledger: reuse, process, verify, store.

The output is verified and stored completely before the ledger marks the job succeeded, so a
crash at any point leaves either a finished, verified output or a job that runs again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from tasks.endpoints.local import LocalOptions
from tasks.engine.pipeline import remove_background
from tasks.engine.segment import Segmenter
from tasks.errors import ErrorCode, InputError, MatteflowError, StorageError
from tasks.ledger.jobs import Job, JobState, Ledger, LedgerEntry, Status, now_iso, safe_stem
from tasks.ledger.results import ResultRow, ended_row
from tasks.media.formats import spec_for
from tasks.media.preflight import InputSettings, carry_rotation, preflight
from tasks.media.verify import (
    Expectation,
    InputProbe,
    NoVideoStream,
    VerifySettings,
    probe_input,
    should_retry_verification,
    verify_output,
)
from tasks.storage.store import Storage, local_input


def reusable(entry: LedgerEntry | None, storage: Storage) -> bool:
    """A finished job is reused when its stored output is still there at its recorded size."""
    if entry is None or entry.state is not JobState.succeeded or not entry.output_path:
        return False
    return entry.bytes is not None and storage.size(entry.output_path) == entry.bytes


def probe_source(src: Path) -> InputProbe:
    """The input's frames, size and timing: what a correct output must match."""
    try:
        return probe_input(src)
    except NoVideoStream as exc:
        raise InputError("input has no video stream", code=ErrorCode.input_no_video) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(
            f"input is not a readable video: {exc}", code=ErrorCode.input_undecodable
        ) from exc


def run_local_job(
    job: Job,
    storage: Storage,
    *,
    segmenter_factory: Callable[[], Segmenter] | None = None,
    settings: VerifySettings | None = None,
    limits: InputSettings | None = None,
) -> ResultRow:
    """Process ``job`` with the local engine unless the ledger says it is already done.

    An output that fails verification is made once more only when ``settings`` allow it.
    Storage failures (after the storage retry policy) end the row as failed with the reason;
    the ledger then still says "not done", so a later run does the job again.
    """
    started_at, t0 = now_iso(), time.perf_counter()
    try:
        return _run_local_job(
            job,
            storage,
            segmenter_factory,
            settings or VerifySettings(),
            limits or InputSettings(),
            t0,
        )
    except StorageError as exc:
        elapsed_s = round(time.perf_counter() - t0, 3)
        return ended_row(
            job, Status.failed, exc.code, exc.message, started_at=started_at, elapsed_s=elapsed_s
        )


def _run_local_job(
    job: Job,
    storage: Storage,
    segmenter_factory: Callable[[], Segmenter] | None,
    settings: VerifySettings,
    limits: InputSettings,
    t0: float,
) -> ResultRow:
    ledger = Ledger(storage)
    started_at = now_iso()
    entry = ledger.get(job.key)
    if reusable(entry, storage):
        assert entry is not None
        return ResultRow.from_entry(
            job,
            entry,
            Status.skipped,
            cost_usd=0.0,
            started_at=started_at,
            finished_at=now_iso(),
            elapsed_s=round(time.perf_counter() - t0, 3),
        )
    if entry is None:
        entry = LedgerEntry(
            key=job.key, endpoint=job.endpoint, video_url=job.video_url, params=job.params
        )
    entry.attempts += 1
    entry.state, entry.error_code, entry.error = JobState.running, None, None
    ledger.put(entry, event="started")
    options = LocalOptions.model_validate(job.params)
    spec = spec_for(options.resolved_format)
    retries = 0
    while True:
        status, codes = Status.failed, []
        entry.error_code = entry.error = None
        try:
            with tempfile.TemporaryDirectory(prefix="matteflow-") as tmp:
                workdir = Path(tmp)
                with local_input(
                    job.video_url, workdir, storage.input_options, max_bytes=limits.max_bytes
                ) as src:
                    facts = preflight(src, limits, spec)
                    source = probe_source(src)
                    out = workdir / f"output{spec.extension}"
                    segmenter = segmenter_factory() if segmenter_factory else None
                    try:
                        result = remove_background(
                            src, out, options, segmenter=segmenter, smoothing=options.smoothing
                        )
                    finally:
                        if segmenter is not None:
                            segmenter.close()
                carry_rotation(out, facts.rotation)
                entry.metrics = {
                    "input": facts.as_dict(),
                    "output_format": spec.name.value,
                    "frames": result.frames,
                    "width": result.width,
                    "height": result.height,
                    "fps": result.fps,
                    "duration_s": result.duration_s,
                    "engine_s": round(result.elapsed_s, 3),
                    "engine_fps": round(result.frames / result.elapsed_s, 2)
                    if result.elapsed_s
                    else None,
                    "stage_s": result.stage_s,
                }
                expected = Expectation.from_input(
                    spec, options.transparent, source, background_rgb=options.rgb
                )
                t_verify = time.perf_counter()
                report = verify_output(out, expected, settings)
                entry.metrics["verify_s"] = round(time.perf_counter() - t_verify, 3)
                codes = report.codes
                entry.verification = report.as_dict()
                entry.bytes, entry.sha256 = report.bytes, report.sha256
                if not report.ok:
                    status = Status.failed_verification
                    entry.state = JobState.failed_verification
                    entry.error_code, entry.error = report.error_code, report.error
                else:
                    rel = f"videos/{safe_stem(job.id, job.key)}{spec.extension}"
                    storage.put_file(out, rel)
                    entry.output_path, entry.output_url = rel, storage.url(rel)
                    entry.state, status = JobState.succeeded, Status.succeeded
        except StorageError as exc:
            # The output may be stored but is not committed: the ledger must not say "succeeded".
            entry.state, status = JobState.failed, Status.failed
            entry.error_code, entry.error = exc.code, exc.message
        except MatteflowError as exc:
            entry.state = JobState.failed
            entry.error_code, entry.error = exc.code, exc.message
        if status is Status.failed_verification and should_retry_verification(
            codes, retries, settings
        ):
            retries += 1
            entry.attempts += 1
            ledger.put(entry, event="retry_verification")
            continue
        break
    ledger.put(entry, event=entry.state.value)
    return ResultRow.from_entry(
        job,
        entry,
        status,
        started_at=started_at,
        finished_at=now_iso(),
        elapsed_s=round(time.perf_counter() - t0, 3),
    )
