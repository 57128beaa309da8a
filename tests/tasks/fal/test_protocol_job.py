"""One fal job against the fake's harder behaviours (issue 13): every row ends as fal meant it.

The whole pixelcut matrix (9 formats x 7 backgrounds) runs through the fake, which renders each
correctly: no correct output may fail verification (the GIF-over-colour ``matte_full`` false
alarm), and the refused combinations never reach fal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tasks.endpoints.options import Background
from tasks.errors import AuthError
from tasks.fal.job import FalRunner
from tasks.ledger.jobs import Job, JobState, Ledger
from tasks.media.formats import OutputFormat
from tasks.storage.store import Storage
from tests.fakes.fal_server import PIXELCUT, FakeFal
from tests.tasks.fal.test_job import make_job, runner_for


async def test_plain_403_on_submit_fails_the_row_only(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    job = person_job()
    fake_fal.forbidden = True  # 403 {"detail": "Forbidden"}: no word of the key or account
    row = await run(job, storage, runner, fake_fal)
    assert row["status"] == "failed" and row["error_code"] == "fal_forbidden"
    assert "Forbidden" in row["error"] and "HTTP 403" in row["error"]
    entry = Ledger(storage).get(job.key)
    assert entry is not None and entry.state is JobState.failed  # not "submitting"


async def run(job: Any, storage: Storage, runner: Any, fake: FakeFal, **_: Any) -> Any:
    from tasks.fal.job import run_fal_job

    return await run_fal_job(job, storage, runner)


async def test_cdn_403_fails_that_row_with_fals_message(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    private = person_job("private.mp4", "p")
    fake_fal.forbid_output_inputs.add("private.mp4")
    row = await run(private, storage, runner, fake_fal)
    assert row["status"] == "failed" and row["error_code"] == "fal_download_failed"
    assert "HTTP 403" in row["error"] and "this file is private" in row["error"]
    other = person_job("public.mp4", "q")
    assert (await run(other, storage, runner, fake_fal))["status"] == "succeeded"


async def test_422_counts_its_estimate_as_possibly_billed(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    job = person_job("bad.mp4")
    fake_fal.reject_inputs.add("bad.mp4")
    row = await run(job, storage, runner, fake_fal)
    assert row["status"] == "failed" and row["error_code"] == "fal_validation_error"
    assert row["cost_usd"] == 0.0
    assert row["possibly_billed_usd"] == row["estimated_cost_usd"] == 0.022
    again = await run(job, storage, runner, fake_fal)  # resumed, not submitted: billed once
    assert again["error_code"] == "fal_validation_error" and again["possibly_billed_usd"] == 0.0
    assert fake_fal.accepted[PIXELCUT] == 1


async def test_a_half_size_pixelcut_output_is_wrong_size(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    job = person_job("half.mp4")
    fake_fal.half_size_inputs.add("half.mp4")
    row = await run(job, storage, runner, fake_fal)
    assert row["status"] == "failed_verification" and row["error_code"] == "wrong_size"
    assert "size 32x24, expected 64x48" in row["error"]


async def test_null_metrics_still_succeed(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage
) -> None:
    fake_fal.null_metrics = True
    runner = runner_for(fake_fal, "birefnet")
    row = await run(
        make_job(fake_fal.serve_file(clips["person"]), "birefnet"), storage, runner, fake_fal
    )
    assert row["status"] == "succeeded" and row["cost_usd"] > 0  # compute time estimated
    await runner.aclose()


async def test_unknown_status_fails_now_and_resumes_later(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    fake_fal.unknown_status = "PAUSED"
    job = person_job()
    row = await run(job, storage, runner, fake_fal)
    assert row["status"] == "failed" and row["error_code"] == "fal_unknown_status"
    assert "PAUSED" in row["error"] and row["request_id"]
    fake_fal.unknown_status = None
    again = await run(job, storage, runner, fake_fal)
    assert again["status"] == "succeeded" and again["request_id"] == row["request_id"]
    assert fake_fal.accepted[PIXELCUT] == 1  # resumed, not submitted twice


async def test_start_timeout_row_is_unbilled(
    fake_fal: FakeFal, person_job: Callable[..., Job], storage: Storage, runner: FalRunner
) -> None:
    runner.client.settings = runner.client.settings.model_copy(update={"start_timeout_s": 1.5})
    fake_fal.queue_wait_s = 1.8  # no runner free before the deadline
    job = person_job()
    row = await run(job, storage, runner, fake_fal)
    assert row["status"] == "failed" and row["error_code"] == "fal_start_timeout"
    assert row["cost_usd"] == 0.0 and row["possibly_billed_usd"] == 0.0
    assert fake_fal.submit_headers[0]["x-fal-request-timeout"] == "1.5"
    assert fake_fal.encodes == 0


async def test_locked_account_stops_with_fals_message(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage, runner: FalRunner
) -> None:
    fake_fal.locked = "User is locked. Reason: Exhausted balance."
    with pytest.raises(AuthError, match="Exhausted balance"):
        await run(make_job(str(clips["person"]), "pixelcut"), storage, runner, fake_fal)


FORMATS = list(OutputFormat)
BACKGROUNDS = [b for b in Background if b is not Background.custom] + [Background.custom]


def test_the_matrix_is_nine_by_seven() -> None:
    assert len(FORMATS) == 9 and len(BACKGROUNDS) == 7


@pytest.mark.slow
async def test_every_correct_pixelcut_output_passes(
    fake_fal: FakeFal, clips: dict[str, Path], storage: Storage, runner: FalRunner
) -> None:
    """9 formats x 7 backgrounds: the impossible ones are refused before fal, the rest pass."""
    url = fake_fal.serve_file(clips["person"])
    outcomes: dict[str, str] = {}
    refused = []
    for fmt in FORMATS:
        for bg in BACKGROUNDS:
            options: dict[str, Any] = {"output_format": fmt.value, "background": bg.value}
            if bg is Background.custom:
                options["background_color"] = "200,30,120"
            try:
                job = make_job(url, "pixelcut", f"{fmt.value}-{bg.value}", **options)
            except (ValidationError, ValueError):
                refused.append((fmt.value, bg.value))
                continue
            row = await run(job, storage, runner, fake_fal)
            outcomes[job.id] = f"{row['status']} {row['error_code']} {row['error']}"
    bad = {k: v for k, v in outcomes.items() if not v.startswith("succeeded")}
    assert not bad, bad
    assert sorted(refused) == sorted((f.value, "transparent") for f in FORMATS if not _alpha(f))
    assert len(outcomes) + len(refused) == 63


def _alpha(fmt: OutputFormat) -> bool:
    from tasks.media.formats import spec_for

    return spec_for(fmt).carries_alpha
