"""Jobs for tests that need a job's identity but never run it."""

from __future__ import annotations

from tasks.ledger.jobs import Job


def row_job(n: int, cost: float = 0.0) -> Job:
    """The local job of manifest row ``n``: key ``k{n}``, id ``v{n}``, an input never fetched."""
    return Job(
        key=f"k{n}",
        row=n,
        id=f"v{n}",
        video_url=f"https://cdn/v{n}.mp4",
        endpoint="local",
        params={},
        estimated_cost_usd=cost,
    )
