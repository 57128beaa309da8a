"""One fal job end to end against the fake server: reuse, resume, unknown submits, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tasks.endpoints import endpoint_info
from tasks.errors import AuthError, BudgetExceeded
from tasks.fal.client import FalSettings, PollPolicy, build_client
from tasks.fal.job import FalRunner, SubmitGuard, run_fal_job, submit_job
from tasks.ledger.jobs import Job, JobState, Ledger, LedgerEntry, job_key
from tasks.manifest.plan import resolve_params
from tasks.media.verify import probe
from tasks.retry import Backoff
from tasks.run.cost import price_for
from tasks.storage.store import Storage
from tests.fakes.fal_server import BIREFNET, PIXELCUT, FakeFal, Faults
from tests.fakes.seaweed import SeaweedS3


def runner_for(fake: FakeFal, endpoint: str, **kw: Any) -> FalRunner:
    uploads = kw.pop("uploads", True)
    settings = FalSettings.model_validate(
        {
            "key": SecretStr(fake.key),
            "queue_url": fake.base_url,
            "rest_url": fake.base_url,
            "uploads": uploads,
            "job_timeout_s": kw.pop("job_timeout_s", 60.0),
        }
    )
    client = build_client(
        settings,
        retry=Backoff(attempts=10, base_delay_s=0.01, max_delay_s=0.05),
        poll=PollPolicy(initial_s=0.02, max_s=0.1, timeout_s=settings.job_timeout_s),
    )
    return FalRunner(client, endpoint_info(endpoint), price_for(endpoint), **kw)


def make_job(url: str, endpoint: str, row_id: str = "a", **options: Any) -> Job:
    params = resolve_params(endpoint_info(endpoint), options, {})
    return Job(
        key=job_key(url, endpoint, params),
        row=1,
        id=row_id,
        video_url=url,
        endpoint=endpoint,
        params=params,
    )


async def test_pixelcut_then_reused_without_a_second_submit(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage, runner: FalRunner
) -> None:
    job = make_job(str(clips["person"]), "pixelcut")  # a local file: uploaded to fal's storage
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded", row
    assert row["verified"] and row["has_alpha"] and row["frames"] == 8
    assert row["estimated_cost_usd"] == row["cost_usd"] == 0.022
    assert storage.size(f"videos/{Path(row['output_url']).name}") == row["bytes"]
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.request_id == row["request_id"]
    assert entry.fal and entry.fal.result and entry.fal.result.video
    assert entry.fal.result.video.content_type == "video/webm"
    again = await run_fal_job(job, storage, runner)
    assert again["status"] == "skipped" and again["cost_usd"] == 0.0
    assert fake_fal.accepted[PIXELCUT] == 1


async def test_birefnet_with_mask_and_compute_cost(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    runner = runner_for(fake_fal, "birefnet")
    url = fake_fal.serve_file(clips["person"])
    job = make_job(url, "birefnet", output_mask=True, video_output_type="PRORES4444 (.mov)")
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded", row
    assert row["output_format"] == "mov_proresks" and row["has_alpha"]
    mask = probe(Path(storage.path(f"videos/{Path(row['mask_url']).name}")))
    assert mask.frames == 8
    entry = Ledger(storage).get(job.key)
    assert entry is not None
    assert entry.fal is not None
    compute = entry.fal.metrics["inference_time"]
    assert row["cost_usd"] == pytest.approx(compute * 0.00111, abs=1e-6)
    await runner.aclose()


async def test_a_job_with_a_request_id_is_resumed_not_resubmitted(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    job = person_job()
    ledger = Ledger(storage)
    entry = LedgerEntry(key=job.key, endpoint=job.endpoint, video_url=job.video_url, params={})
    from tasks.fal.client import CallTrace

    await submit_job(job, entry, ledger, runner, CallTrace())  # then the process "dies"
    stored = ledger.get(job.key)
    assert stored is not None and stored.state is JobState.submitted and stored.request_id
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded" and row["request_id"] == stored.request_id
    assert fake_fal.accepted[PIXELCUT] == 1


async def test_unknown_submit_is_recorded_and_repeated_only_when_asked(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    url = fake_fal.serve_file(clips["person"])
    job = make_job(url, "pixelcut")
    fake_fal.drop_after_accept = 1
    runner = runner_for(fake_fal, "pixelcut")
    row = await run_fal_job(job, storage, runner)
    assert (row["status"], row["error_code"]) == ("failed", "submit_unknown")
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.state is JobState.submitting and entry.request_id is None
    row = await run_fal_job(job, storage, runner)  # a plain re-run does not send it again
    assert row["error_code"] == "submit_unknown" and "--resubmit-unknown" in row["error"]
    assert fake_fal.accepted[PIXELCUT] == 1
    await runner.aclose()
    runner = runner_for(fake_fal, "pixelcut", resubmit_unknown=True)
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert fake_fal.accepted[PIXELCUT] == 2
    await runner.aclose()


async def test_job_error_and_validation_error_end_failed_with_fals_message(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    broken = fake_fal.serve_file(clips["person"], "broken.mp4")
    rejected = fake_fal.serve_file(clips["person"], "rejected.mp4")
    fake_fal.fail_inputs.add("broken.mp4")
    fake_fal.reject_inputs.add("rejected.mp4")
    runner = runner_for(fake_fal, "pixelcut")
    row = await run_fal_job(make_job(broken, "pixelcut"), storage, runner)
    assert (row["status"], row["error_code"]) == ("failed", "fal_job_error")
    assert "Internal error while processing" in row["error"] and "runner_error" in row["error"]
    job = make_job(rejected, "pixelcut", row_id="r")
    row = await run_fal_job(job, storage, runner)
    assert (row["status"], row["error_code"]) == ("failed", "fal_validation_error")
    assert "video_url: Unsupported video" in row["error"]
    entry = Ledger(storage).get(job.key)
    assert entry is not None and "validation_error" in entry.metrics["fal_error_types"]
    await run_fal_job(job, storage, runner)  # re-run: polled again, not resubmitted
    assert fake_fal.accepted[PIXELCUT] == 2
    await runner.aclose()
    runner = runner_for(fake_fal, "pixelcut", retry_failed=True)
    await run_fal_job(job, storage, runner)
    assert fake_fal.accepted[PIXELCUT] == 3
    await runner.aclose()


async def test_local_input_refused_when_uploads_are_off(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    runner = runner_for(fake_fal, "pixelcut", uploads=False)
    row = await run_fal_job(make_job(str(clips["person"]), "pixelcut"), storage, runner)
    assert (row["status"], row["error_code"]) == ("failed", "upload_disabled")
    assert "fal.ai cannot read" in row["error"]
    assert fake_fal.accepted[PIXELCUT] == 0
    await runner.aclose()


async def test_auth_error_propagates_and_leaves_no_secret(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    fake_fal.locked = "User is locked. Reason: Exhausted balance. Top up at fal.ai/dashboard"
    job = person_job()
    with pytest.raises(AuthError) as info:
        await run_fal_job(job, storage, runner)
    assert fake_fal.key not in str(info.value)
    assert "User is locked. Reason: Exhausted balance" in str(info.value)
    assert fake_fal.key not in (storage.read_bytes(f"jobs/{job.key}.json") or b"").decode()
    # fal refused the submit: the entry leaves "submitting", so the next run submits it again
    # (not submit_unknown) once the account is unlocked.
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.state is JobState.failed
    assert entry.error_code == "auth_error" and "User is locked" in (entry.error or "")
    fake_fal.locked = None
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded" and fake_fal.accepted[PIXELCUT] == 1


async def test_budget_guard_wraps_the_submit(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage
) -> None:
    seen: list[float] = []

    @asynccontextmanager
    async def guard(job: Job, estimate: float) -> AsyncIterator[None]:
        seen.append(estimate)
        raise BudgetExceeded(f"{estimate} is over budget")
        yield

    hook: SubmitGuard = guard
    runner = runner_for(fake_fal, "pixelcut", submit_guard=hook)
    row = await run_fal_job(person_job(), storage, runner)
    assert (row["status"], row["error_code"]) == ("skipped_budget", "budget_exceeded")
    assert seen == [0.022] and fake_fal.accepted[PIXELCUT] == 0
    await runner.aclose()


async def test_job_timeout_cancels_at_fal(
    tmp_path: Path, clips: dict[str, Path], storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFal(tmp_path / "slow", latency_s=2.0, concurrency=1) as fake:
        runner = runner_for(fake, "birefnet", job_timeout_s=0.3)
        row = await run_fal_job(
            make_job(fake.serve_file(clips["person"]), "birefnet"), storage, runner
        )
        assert (row["status"], row["error_code"]) == ("failed", "fal_timeout")
        assert fake.cancelled == 1 and fake.accepted[BIREFNET] == 1
        await runner.aclose()


@pytest.mark.integration
async def test_s3_input_is_presigned_for_fal(
    fake_fal: FakeFal, clips: dict[str, Path], seaweed: SeaweedS3, s3_bucket: str, storage: Storage
) -> None:
    import s3fs

    options = seaweed.storage_options()
    s3fs.S3FileSystem(**options).put_file(str(clips["person"]), f"{s3_bucket}/in/person.mp4")
    fake_fal.faults = Faults(rate=0.0)
    runner = runner_for(fake_fal, "pixelcut", input_storage_options=options)
    job = make_job(f"{s3_bucket}/in/person.mp4", "pixelcut")
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "succeeded", row
    (sent,) = [url for (_, url) in fake_fal.accepted_inputs]
    assert sent.startswith("http://127.0.0.1") and "Signature" in sent
    assert row["video_url"] == job.video_url and "Signature" not in str(
        Ledger(storage).get(job.key)
    )
    await runner.aclose()


async def test_a_flaky_input_host_is_probed_again(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    class FirstTwoInputs(Faults):
        def pick(self, call: str) -> str | None:
            if call == "input" and self.rate < 2:
                self.rate += 1
                return "503"
            return None

    fake_fal.faults = FirstTwoInputs(rate=0.0)
    row = await run_fal_job(person_job(), storage, runner)
    assert row["status"] == "succeeded", row
    assert fake_fal.calls[("input", 503)] == 2


async def test_a_mask_that_disagrees_with_the_video_fails_verification(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage, tmp_path: Path
) -> None:
    runner = runner_for(fake_fal, "birefnet")
    broken = tmp_path / "bad-mask.mp4"
    broken.write_bytes(clips["person"].read_bytes())
    fake_fal.invert_mask_inputs.add("bad-mask")
    url = fake_fal.serve_file(broken)
    job = make_job(url, "birefnet", output_mask=True, video_output_type="PRORES4444 (.mov)")
    row = await run_fal_job(job, storage, runner)
    assert row["status"] == "failed_verification", row
    assert "mask_mismatch" in row["error_code"]
    assert row["mask_url"] is None  # a mask that fails is not stored as the job's mask
    await runner.aclose()
