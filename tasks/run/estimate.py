"""Cost estimates for a planned manifest, from container metadata, without sending anything."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasks.errors import MatteflowError
from tasks.ledger.jobs import Job
from tasks.media.facts import read_video_facts
from tasks.media.inputs import readable_location
from tasks.run.cost import Price, cost_usd
from tasks.storage.store import redact_url

PRESIGN_FOR_PROBE_S = 600


def estimate_job(job: Job, price: Price, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """One row of the estimate: what the probe saw and what the job should cost."""
    row: dict[str, Any] = {
        "row": job.row,
        "id": job.id,
        "video_url": redact_url(job.video_url),
        "frames": None,
        "duration_s": None,
        "exact": None,
        "estimated_cost_usd": 0.0,
        "error": None,
    }
    try:
        location = readable_location(job.video_url, PRESIGN_FOR_PROBE_S, storage_options)
        probed = read_video_facts(location)
    except MatteflowError as exc:
        row["error"] = f"{exc.code}: {exc.message}"
        return row
    compute_s = price.compute_seconds(probed.frames)
    row.update(
        frames=probed.frames,
        duration_s=probed.duration_s,
        exact=probed.frames_exact,
        estimated_cost_usd=cost_usd(price, frames=probed.frames, compute_s=compute_s),
    )
    return row


def estimate_jobs(
    jobs: list[Job], price: Price, storage_options: dict[str, Any] | None, *, workers: int = 8
) -> list[dict[str, Any]]:
    """Probe inputs a few at a time (remote probes wait on the network, not the CPU)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: estimate_job(job, price, storage_options), jobs))
