"""Object storage goes away mid-job (the SeaweedFS server is stopped): writes are retried with
backoff; a short outage is bridged, a long one fails the row clearly, and nothing is marked done
in the ledger that is not fully stored."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs

from tasks.endpoints import endpoint_info
from tasks.engine.job import run_local_job
from tasks.fal.job import run_fal_job
from tasks.ledger.jobs import Job, JobState, Ledger, job_key
from tasks.manifest.plan import resolve_params
from tasks.retry import Backoff
from tasks.storage.store import Storage
from tests.fakes.seaweed import SeaweedS3
from tests.hardening.conftest import EllipseSegmenter

pytestmark = pytest.mark.integration
LOCAL = endpoint_info("local")


def kill(server: SeaweedS3) -> None:
    """The storage server dies at once (SIGKILL), as in a crash or a network cut."""
    if server.proc is not None:
        server.proc.kill()
        server.proc.wait(10)
        server.proc = None


def restart(server: SeaweedS3) -> None:
    """Start the server again (same S3 port, same data) and wait until it serves reads again."""
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            kill(server)
            if attempt == 2:
                raise
            time.sleep(1.0)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options())
    deadline = time.monotonic() + 60
    while True:
        try:
            fs.cat_file("outage/ready")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def flaky_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A server of this module's own, so stopping it cannot disturb other tests."""
    server = SeaweedS3(tmp_path_factory.mktemp("flaky-seaweed"))
    server.start()
    fs = s3fs.S3FileSystem(**server.storage_options())
    fs.mkdir("outage")
    fs.pipe_file("outage/ready", b"1")
    try:
        yield server
    finally:
        kill(server)


class StopsStorage(EllipseSegmenter):
    """Stops the storage server while the first frame is processed (mid-job, deterministic)."""

    def __init__(self, server: SeaweedS3, back_after_s: float | None = None) -> None:
        self.server, self.back_after_s, self.done = server, back_after_s, False

    def __call__(self, rgb: Any) -> Any:
        if not self.done:
            self.done = True
            kill(self.server)
            if self.back_after_s is not None:
                delay = self.back_after_s
                threading.Thread(
                    target=lambda: (time.sleep(delay), restart(self.server)), daemon=True
                ).start()
        return super().__call__(rgb)


def job_for(url: str, smoothing: float) -> Job:
    params = resolve_params(LOCAL, {}, {"smoothing": smoothing})
    key = job_key(url, "local", params)
    return Job(key=key, row=1, id="clip", video_url=url, endpoint="local", params=params)


def storage(server: SeaweedS3, prefix: str, retry: Backoff) -> Storage:
    return Storage(f"s3://outage/{prefix}", server.storage_options(), retry=retry)


def test_a_short_outage_is_bridged_by_retries(
    flaky_s3: SeaweedS3,
    clips: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    tally: Counter[str],
) -> None:
    patient = Backoff(attempts=10, base_delay_s=0.5, max_delay_s=4.0)
    store = storage(flaky_s3, "short", patient)
    job = job_for(str(clips["silent"]), 0.61)
    with caplog.at_level(logging.WARNING, logger="matteflow.storage"):
        row = run_local_job(
            job, store, segmenter_factory=lambda: StopsStorage(flaky_s3, back_after_s=1.0)
        )
    tally["storage_outages"] += 1
    tally["rows"] += 1
    assert row["status"] == "succeeded", row["error"]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries, "the outage was not noticed"
    tally["storage_retries"] += len(retries)
    entry = Ledger(store).get(job.key)
    assert entry is not None and entry.state is JobState.succeeded
    assert entry.output_path and store.size(entry.output_path) == entry.bytes == row["bytes"]


def test_a_long_outage_fails_the_row_and_marks_nothing_done(
    flaky_s3: SeaweedS3, clips: dict[str, Path], tally: Counter[str]
) -> None:
    brief = Backoff(attempts=3, base_delay_s=0.05, max_delay_s=0.1)
    store = storage(flaky_s3, "long", brief)
    job = job_for(str(clips["silent"]), 0.62)
    try:
        row = run_local_job(job, store, segmenter_factory=lambda: StopsStorage(flaky_s3))
    finally:
        restart(flaky_s3)
    tally["storage_outages"] += 1
    tally["rows"] += 1
    assert (row["status"], row["error_code"]) == ("failed", "storage_unavailable")
    assert "after 3 attempts" in row["error"] and "outage/long/" in row["error"]
    entry = Ledger(store).get(job.key)
    assert entry is not None and entry.state is JobState.running  # last write before the outage
    assert not store.exists(f"videos/clip-{job.key[:12]}.webm")
    again = run_local_job(job, store, segmenter_factory=EllipseSegmenter)
    assert again["status"] == "succeeded" and again["attempts"] == 2
    assert run_local_job(job, store)["status"] == "skipped"


class StopsAfterUpload(Storage):
    """Storage that goes away just after the output is uploaded, before the ledger commit."""

    server: SeaweedS3

    def put_file(self, local: Path, rel: str) -> None:
        super().put_file(local, rel)
        kill(self.server)


def test_an_outage_between_upload_and_commit_is_not_a_success(
    flaky_s3: SeaweedS3, clips: dict[str, Path], tally: Counter[str]
) -> None:
    brief = Backoff(attempts=2, base_delay_s=0.05, max_delay_s=0.1)
    store = StopsAfterUpload("s3://outage/commit", flaky_s3.storage_options(), retry=brief)
    store.server = flaky_s3
    job = job_for(str(clips["silent"]), 0.63)
    try:
        row = run_local_job(job, store, segmenter_factory=EllipseSegmenter)
    finally:
        restart(flaky_s3)
    tally["storage_outages"] += 1
    tally["rows"] += 1
    assert (row["status"], row["error_code"]) == ("failed", "storage_unavailable")
    plain = storage(flaky_s3, "commit", brief)
    entry = Ledger(plain).get(job.key)
    assert entry is not None and entry.state is not JobState.succeeded
    again = run_local_job(job, plain, segmenter_factory=EllipseSegmenter)
    assert again["status"] == "succeeded" and again["attempts"] == 2


async def test_a_fal_job_whose_storage_goes_away_is_fetched_again_not_paid_again(
    flaky_s3: SeaweedS3,
    clips: dict[str, Path],
    tmp_path: Path,
    tally: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.fakes.fal_server import PIXELCUT, FakeFal
    from tests.hardening.test_fal_faults import job_for as fal_job
    from tests.hardening.test_fal_faults import runner_for

    # The first run could not release its claim (storage was gone) and its process lives on:
    # the rerun takes the claim over once the lease runs out (300 s by default, 2 s here).
    monkeypatch.setenv("MATTEFLOW_CLAIM_LEASE_S", "2")
    monkeypatch.setenv("MATTEFLOW_CLAIM_POLL_S", "0.2")
    brief = Backoff(attempts=2, base_delay_s=0.05, max_delay_s=0.1)
    store = StopsAfterUpload("s3://outage/fal", flaky_s3.storage_options(), retry=brief)
    store.server = flaky_s3
    with FakeFal(tmp_path / "fal") as fake:
        job = fal_job(fake.serve_file(clips["silent"], "f.mp4"), 1)
        first = runner_for(fake)
        try:
            row = await run_fal_job(job, store, first)
        finally:
            await first.aclose()
            await asyncio.to_thread(restart, flaky_s3)
        tally["storage_outages"] += 1
        tally["rows"] += 1
        assert (row["status"], row["error_code"]) == ("failed", "storage_unavailable"), row
        plain = storage(flaky_s3, "fal", brief)
        entry = Ledger(plain).get(job.key)
        assert entry is not None and entry.state is not JobState.succeeded and entry.request_id
        runner = runner_for(fake)
        with caplog.at_level(logging.WARNING, logger="matteflow"):
            again = await run_fal_job(job, plain, runner)
        await runner.aclose()
    assert any("took over the claim" in r.getMessage() for r in caplog.records)
    assert again["status"] == "succeeded" and again["request_id"] == entry.request_id
    assert fake.accepted[PIXELCUT] == 1  # the result was fetched again; nothing paid twice
