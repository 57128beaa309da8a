"""Pacing: the in-process cap, and the Prefect global concurrency limit shared across workers."""

from __future__ import annotations

import asyncio

import pytest

from flows.concurrency import ensure_shared_limit, make_pacer
from tasks.run.pacing import Pacer, PacingConfig


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PacingConfig(max_in_flight=0, submit_rate_per_s=1)
    with pytest.raises(ValueError):
        PacingConfig(max_in_flight=1, submit_rate_per_s=0)


async def run_jobs(pacers: list[Pacer], jobs: int, seconds: float) -> int:
    """Run ``jobs`` jobs on each pacer at once; return the peak held across all of them."""
    running = peak = 0

    async def one(pacer: Pacer) -> None:
        nonlocal running, peak
        async with pacer.job():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(seconds)
            running -= 1

    await asyncio.gather(*(one(p) for p in pacers for _ in range(jobs)))
    return peak


async def test_in_process_cap() -> None:
    pacer = Pacer(PacingConfig(max_in_flight=4, submit_rate_per_s=1000))
    assert await run_jobs([pacer], 40, 0.002) == 4 == pacer.peak_in_flight


async def test_shared_limit_holds_across_pacers_and_slots_are_reused(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    await ensure_shared_limit("test-pacing-shared", 3)
    config = PacingConfig(
        max_in_flight=3, submit_rate_per_s=1000, shared_limit="test-pacing-shared"
    )
    workers = [make_pacer(config), make_pacer(config)]  # two processes' worth of pacing, 3 each
    try:
        peak = await run_jobs(workers, 15, 0.02)
    finally:
        for pacer in workers:
            await pacer.aclose()
    assert peak <= 3  # 6 allowed in process, 3 across both
    acquired = sum(p.shared.acquired for p in workers if p.shared)
    assert 3 <= acquired < 30  # consecutive jobs reuse a held slot instead of asking again
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name("test-pacing-shared")
    assert limit.active_slots == 0  # every slot given back


async def test_ensure_shared_limit_creates_then_resizes(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    await ensure_shared_limit("test-pacing-size", 5)
    await ensure_shared_limit("test-pacing-size", 2)
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name("test-pacing-size")
    assert limit.limit == 2 and limit.active
