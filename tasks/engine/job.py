"""Run one local-engine job end to end against the ledger: reuse, process, verify, store.

The output is verified and stored completely before the ledger marks the job succeeded, so a
crash at any point leaves either a finished, verified output or a job that runs again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.endpoints.local import LocalOptions
from tasks.engine.pipeline import remove_background
from tasks.engine.segment import Segmenter
from tasks.errors import ErrorCode, MatteflowError, StorageError
from tasks.ledger.jobs import Job, JobState, Ledger, LedgerEntry, Status, now_iso, safe_stem
from tasks.ledger.results import ResultRow, ended_row
from tasks.ledger.reuse import reusable, skipped_row
from tasks.media.facts import VideoFacts
from tasks.media.formats import FormatSpec, spec_for
from tasks.media.preflight import InputSettings, carry_rotation, preflight
from tasks.media.verify import (
    Expectation,
    VerifyReport,
    VerifySettings,
    should_retry_verification,
    verify_output,
)
from tasks.storage.store import Storage, local_input


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
    started_at, t0, c0 = now_iso(), time.perf_counter(), time.thread_time()
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
        cpu_s = round(time.thread_time() - c0, 4)
        return ended_row(
            job,
            Status.failed,
            exc.code,
            exc.message,
            started_at=started_at,
            elapsed_s=elapsed_s,
            cpu_s=cpu_s,
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
    started_at, c0 = now_iso(), time.thread_time()  # the job runs on this one thread
    entry = ledger.get(job.key)
    if reusable(entry, storage):
        assert entry is not None
        return skipped_row(job, entry, started_at, t0)
    if entry is None:
        entry = LedgerEntry(
            key=job.key, endpoint=job.endpoint, video_url=job.video_url, params=job.params
        )
    entry.attempts += 1
    entry.state, entry.error_code, entry.error = JobState.running, None, None
    ledger.put(entry, event="started")
    run = LocalAttempt(job, storage, LocalOptions.model_validate(job.params), segmenter_factory)
    retries = 0
    while True:
        status, codes = run.once(entry, settings, limits)
        if status is not Status.failed_verification or not should_retry_verification(
            codes, retries, settings
        ):
            break
        retries += 1
        entry.attempts += 1
        ledger.put(entry, event="retry_verification")
    # This thread's CPU: decode, matte and encode calls; codec threads of their own are not in it.
    entry.metrics["cpu_s"] = round(time.thread_time() - c0, 4)
    ledger.put(entry, event=entry.state.value)
    return ResultRow.from_entry(
        job,
        entry,
        status,
        started_at=started_at,
        finished_at=now_iso(),
        elapsed_s=round(time.perf_counter() - t0, 3),
    )


@dataclass
class LocalAttempt:
    """One try at a local job: read the input's facts (one open), remove, verify, store."""

    job: Job
    storage: Storage
    options: LocalOptions
    segmenter_factory: Callable[[], Segmenter] | None

    @property
    def spec(self) -> FormatSpec:
        return spec_for(self.options.resolved_format)

    def once(
        self, entry: LedgerEntry, settings: VerifySettings, limits: InputSettings
    ) -> tuple[Status, list[ErrorCode]]:
        """The attempt's row status and verification codes; ``entry`` records the outcome."""
        entry.error_code = entry.error = None
        try:
            with tempfile.TemporaryDirectory(prefix="matteflow-") as tmp:
                out, facts = self.remove(entry, Path(tmp), limits)
                report = self.verify(entry, out, facts, settings)
                if not report.ok:
                    entry.state = JobState.failed_verification
                    entry.error_code, entry.error = report.error_code, report.error
                    return Status.failed_verification, report.codes
                self.store(entry, out)
                return Status.succeeded, report.codes
        except MatteflowError as exc:
            # A StorageError too: the output may be stored but is not committed, so the ledger
            # must not say "succeeded".
            entry.note_error(exc, JobState.failed)
        return Status.failed, []

    def remove(
        self, entry: LedgerEntry, workdir: Path, limits: InputSettings
    ) -> tuple[Path, VideoFacts]:
        """Fetch the input, check it, run the engine; the output carries the input's rotation."""
        options, spec = self.options, self.spec
        with local_input(
            self.job.video_url, workdir, self.storage.input_options, max_bytes=limits.max_bytes
        ) as src:
            facts = preflight(src, limits)
            out = workdir / f"output{spec.extension}"
            segmenter = self.segmenter_factory() if self.segmenter_factory else None
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
            "engine_fps": round(result.frames / result.elapsed_s, 2) if result.elapsed_s else None,
            "stage_s": result.stage_s,
        }
        return out, facts

    def verify(
        self, entry: LedgerEntry, out: Path, facts: VideoFacts, settings: VerifySettings
    ) -> VerifyReport:
        """Check the output against the input's facts and record the report in ``entry``."""
        expected = Expectation.from_input(
            self.spec,
            self.options.transparent,
            facts,
            size=self.spec.encoded_size(facts.width, facts.height),
            background_rgb=self.options.rgb,
        )
        t_verify = time.perf_counter()
        report = verify_output(out, expected, settings)
        entry.metrics["verify_s"] = round(time.perf_counter() - t_verify, 3)
        entry.verification = report.as_dict()
        entry.bytes, entry.sha256 = report.bytes, report.sha256
        return report

    def store(self, entry: LedgerEntry, out: Path) -> None:
        """Store a verified output; the ledger says "succeeded" only after this."""
        spec = self.spec
        rel = f"videos/{safe_stem(self.job.id, self.job.key)}{spec.extension}"
        self.storage.put_file(out, rel)
        entry.output_path, entry.output_url = rel, self.storage.url(rel)
        entry.state = JobState.succeeded
