"""Paid once, in one process against the fake fal: truncated downloads, expired results,
sync_mode outputs, cancels that do not stop a running job, and another run's claim."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from tasks.fal.cancel import never_ran
from tasks.fal.client import CallTrace, QueueStatus
from tasks.fal.job import FalRunner, run_fal_job, submit_job
from tasks.ledger.claims import Claim, ClaimOwner, Claims, ClaimSettings
from tasks.ledger.jobs import Job, JobState, Ledger, LedgerEntry
from tasks.storage.store import Storage
from tests.fakes.fal_server import BIREFNET, PIXELCUT, FakeFal
from tests.tasks.fal.test_job import make_job, runner_for


def wait_until(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


async def test_a_truncated_download_is_downloaded_again_not_resubmitted(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    job = person_job()
    fake_fal.short_downloads = 1
    first = await run_fal_job(job, storage, runner)
    assert (first["status"], first["error_code"]) == ("failed", "fal_download_failed"), first
    assert "truncated" in first["error"]
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.fal and entry.fal.result and entry.fal.result.video
    saved_url = entry.fal.result.video.url
    again = await run_fal_job(job, storage, runner)
    assert again["status"] == "succeeded" and again["request_id"] == first["request_id"]
    assert fake_fal.accepted[PIXELCUT] == 1 and sum(fake_fal.ran_inputs.values()) == 1
    assert fake_fal.calls[("result", 200)] == 1  # the re-run used the saved result, not fal's
    final = Ledger(storage).get(job.key)
    assert final is not None and final.fal and final.fal.result and final.fal.result.video
    assert final.fal.result.video.url == saved_url


async def test_an_expired_unread_result_is_reported_and_never_resubmitted_unasked(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage
) -> None:
    job = person_job()
    runner = runner_for(fake_fal, "pixelcut")
    entry = LedgerEntry(key=job.key, endpoint=job.endpoint, video_url=job.video_url, params={})
    sub = await submit_job(job, entry, Ledger(storage), runner, CallTrace())  # then it "dies"
    wait_until(lambda: fake_fal.completed == 1)
    fake_fal.result_ttl_s = 0.0  # fal dropped the result before any run read it
    for _ in range(2):
        row = await run_fal_job(job, storage, runner)
        assert (row["status"], row["error_code"]) == ("failed", "fal_result_expired"), row
        assert sub.request_id in row["error"] and "dashboard" in row["error"]
        assert row["request_id"] == sub.request_id
    assert fake_fal.accepted[PIXELCUT] == 1
    await runner.aclose()
    paying = runner_for(fake_fal, "pixelcut", resubmit_expired=True)
    fake_fal.result_ttl_s = 3600.0
    row = await run_fal_job(job, storage, paying)
    assert row["status"] == "succeeded" and row["request_id"] != sub.request_id
    assert fake_fal.accepted[PIXELCUT] == 2  # only with the explicit flag
    await paying.aclose()


async def test_sync_mode_outputs_are_staged_before_any_download(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    job = make_job(fake_fal.serve_file(clips["person"]), "birefnet", sync_mode=True)
    runner = runner_for(fake_fal, "birefnet")
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded" and row["has_alpha"], row
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.fal and entry.fal.result and entry.fal.result.video
    saved = entry.fal.result.video
    assert saved.url == "data:…" and (saved.model_extra or {})["saved_copy"].startswith("staged/")
    assert "base64" not in (storage.read_bytes(f"jobs/{job.key}.json") or b"").decode()
    Path(storage.path(entry.output_path or "")).unlink()  # the output is lost: fetch it again
    again = await run_fal_job(job, storage, runner)
    assert again["status"] == "succeeded" and again["sha256"] == row["sha256"]
    assert fake_fal.accepted[BIREFNET] == 1 and fake_fal.calls[("result", 200)] == 1
    await runner.aclose()


async def test_a_cancel_does_not_stop_a_running_job_and_its_result_is_kept(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    fake_fal.latency_s = 1.0
    job = person_job()
    task = asyncio.create_task(run_fal_job(job, storage, runner))

    def running() -> bool:
        entry = Ledger(storage).get(job.key)
        return fake_fal.in_progress == 1 and entry is not None and entry.request_id is not None

    await asyncio.to_thread(wait_until, running)
    task.cancel()
    row = await task
    assert (row["status"], row["error_code"]) == ("cancelled", "cancelled")
    assert "despite the cancel" in row["error"] and "result is saved" in row["error"], row
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.state is JobState.completed and entry.request_id
    claim = Claims(storage, ClaimOwner(run="x")).read(job.key)
    assert claim is not None and not claim[0].held  # released after the cancel
    again = await run_fal_job(job, storage, runner)
    assert again["status"] == "succeeded" and again["request_id"] == row["request_id"]
    assert fake_fal.accepted[PIXELCUT] == 1 and sum(fake_fal.ran_inputs.values()) == 1


async def test_a_job_fal_confirms_never_ran_is_submitted_again(
    tmp_path: Path, clips: dict[str, Path], storage: Storage
) -> None:
    with FakeFal(tmp_path / "fal", latency_s=2.0, concurrency=1) as fake:  # one runner
        await never_ran_then_submitted(fake, clips, storage)


async def never_ran_then_submitted(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    busy = make_job(fake_fal.serve_file(clips["person"], "busy.mp4"), "pixelcut")
    queued = make_job(fake_fal.serve_file(clips["person"], "queued.mp4"), "pixelcut")
    runner = runner_for(fake_fal, "pixelcut")
    first = asyncio.create_task(run_fal_job(busy, storage, runner))
    await asyncio.to_thread(wait_until, lambda: fake_fal.in_progress == 1)
    second = asyncio.create_task(run_fal_job(queued, storage, runner))
    await asyncio.to_thread(
        wait_until, lambda: bool(getattr(Ledger(storage).get(queued.key), "request_id", None))
    )
    second.cancel()
    row = await second
    assert row["status"] == "cancelled" and "before it ran" in row["error"], row
    entry = Ledger(storage).get(queued.key)
    assert entry is not None and entry.request_id is None and entry.fal
    assert entry.fal.cancelled_submission is not None
    assert (await first)["status"] == "succeeded"
    again = await run_fal_job(queued, storage, runner)
    assert again["status"] == "succeeded"
    url = queued.video_url
    assert (
        fake_fal.accepted_inputs[(PIXELCUT, url)] == 2 and fake_fal.ran_inputs[(PIXELCUT, url)] == 1
    )
    await runner.aclose()


def test_never_ran_needs_fals_word_and_no_sign_of_running() -> None:
    gone = QueueStatus(status="COMPLETED", error="Request cancelled", metrics={})
    assert never_ran("CANCELLATION_REQUESTED", gone, seen_running=False)
    assert not never_ran("CANCELLATION_REQUESTED", gone, seen_running=True)
    assert not never_ran("NOT_FOUND", gone, seen_running=False)
    assert not never_ran("cancel failed: endpoint_transient", gone, seen_running=False)
    assert not never_ran("CANCELLATION_REQUESTED", None, seen_running=False)
    ran = QueueStatus(status="COMPLETED", error="stopped", metrics={"inference_time": 1.2})
    assert not never_ran("CANCELLATION_REQUESTED", ran, seen_running=False)
    done = QueueStatus(status="COMPLETED", metrics={})
    assert not never_ran("CANCELLATION_REQUESTED", done, seen_running=False)


async def test_another_runs_live_claim_ends_the_row_naming_it(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage
) -> None:
    job = person_job()
    other = Claims(storage, ClaimOwner(run="nightly-0300"), ClaimSettings(lease_s=600))
    held = other.take(job.key)
    assert isinstance(held, Claim)
    runner = runner_for(fake_fal, "pixelcut", claims=ClaimSettings(wait_s=0))
    row = await run_fal_job(job, storage, runner)
    assert (row["status"], row["error_code"]) == ("failed", "claimed_elsewhere"), row
    assert "nightly-0300" in row["error"]
    assert sum(fake_fal.accepted.values()) == 0
    other.release(held)
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded" and fake_fal.accepted[PIXELCUT] == 1
    await runner.aclose()
