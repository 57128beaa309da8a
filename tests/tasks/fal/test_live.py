"""The real fal.ai: one short clip through each endpoint. Runs only with FAL_KEY set (costs ~$0.03)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.endpoints import endpoint_info
from tasks.fal.client import FalSettings, build_client
from tasks.fal.job import FalRunner, run_fal_job
from tasks.ledger.jobs import Job, job_key
from tasks.manifest.plan import resolve_params
from tasks.run.cost import price_for
from tasks.storage.store import Storage

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("FAL_KEY"), reason="FAL_KEY is not set"),
]


@pytest.mark.parametrize("endpoint", ["pixelcut", "birefnet"])
async def test_one_clip_through_the_real_endpoint(
    endpoint: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    info = endpoint_info(endpoint)
    runner = FalRunner(build_client(FalSettings()), info, price_for(endpoint))
    params = resolve_params(info, {}, {})
    url = str(clips["silent"])  # a local file: goes through fal's storage upload
    job = Job(
        key=job_key(url, endpoint, params),
        row=1,
        id="live",
        video_url=url,
        endpoint=endpoint,
        params=params,
    )
    try:
        row = await run_fal_job(job, Storage(str(tmp_path)), runner)
    finally:
        await runner.aclose()
    assert row["status"] == "succeeded", row
    assert row["verified"] and row["request_id"] and row["cost_usd"] > 0
