"""Prefect global concurrency limits: the account's cap on jobs in flight, shared by every worker.

Prefect-specific, so it lives with the flows; ``tasks/run/pacing.py`` takes it as a ``SharedCap``.
A slot is held for the length of a whole job (never per HTTP call), so the server sees two calls
per job, not dozens.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tasks.run.pacing import Pacer, PacingConfig

# Lease of a shared slot: Prefect renews it every 45 s while held; on a real server a killed
# worker's slot comes back within this plus the repossessor's loop (measured: 68 s with the
# 15 s default loop). 60 s is the shortest lease the server accepts.
SHARED_LEASE_S = 60.0


class _Lane:
    """One held slot of the shared limit, kept by its own task between jobs."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.release = asyncio.Event()
        self.opened = loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.release.set()


class SharedSlots:
    """Slots of a Prefect global concurrency limit, reused by consecutive jobs of this process.

    Asking the server for a slot per job costs an acquire, a renewal and a release, serialised
    per process; at 20 jobs a second that made the run several times slower (bench). A slot
    freed by a job is parked here instead and the next job takes it without a call; it goes
    back to the server after ``idle_s`` unused, or after its job once held ``max_hold_s`` (so
    other workers on the account get their turn). The cap still holds across all workers: a
    parked slot is counted by the server as taken.
    """

    def __init__(
        self, config: PacingConfig, *, idle_s: float = 2.0, max_hold_s: float = 60.0
    ) -> None:
        self.config = config
        self.idle_s = idle_s
        self.max_hold_s = max_hold_s
        self._idle: list[_Lane] = []
        self._lanes: set[_Lane] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self.acquired = 0  # slots taken from the server (for tests and the summary)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        lane = self._idle.pop() if self._idle else await self._open()
        if lane.idle_timer is not None:
            lane.idle_timer.cancel()
            lane.idle_timer = None
        try:
            yield
        finally:
            self._park(lane)

    async def _open(self) -> _Lane:
        if self._closing:  # our own slot on its way back: asking now would only be denied
            await asyncio.wait(self._closing, return_when=asyncio.FIRST_COMPLETED, timeout=5)
        lane = _Lane()
        lane.task = asyncio.create_task(self._hold(lane), name="matteflow-shared-slot")
        self._lanes.add(lane)
        try:
            await asyncio.shield(lane.ready)
        except BaseException:
            lane.close()  # cancelled while waiting: the slot goes back as soon as it is granted
            raise
        self.acquired += 1
        return lane

    async def _hold(self, lane: _Lane) -> None:
        from prefect.concurrency.context import ConcurrencyContext

        try:
            # The lane's own cleanup context: a lane opened inside a job's task run would
            # otherwise record its lease in that task run's context, and Prefect would release
            # the slot (with a blocking call) when that task run ends, while the lane still
            # lends it to the next jobs.
            with ConcurrencyContext():
                await self._serve(lane)
        except BaseException as exc:
            if not lane.ready.done():
                lane.ready.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._lanes.discard(lane)

    async def _serve(self, lane: _Lane) -> None:
        async with acquire_shared(self.config):
            if not lane.ready.done():
                lane.ready.set_result(None)
            await lane.release.wait()

    def _park(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        if lane.release.is_set() or loop.time() - lane.opened > self.max_hold_s:
            self._close(lane)
            return
        self._idle.append(lane)
        lane.idle_timer = loop.call_later(self.idle_s, self._expire, lane)

    def _expire(self, lane: _Lane) -> None:
        if lane in self._idle:
            self._idle.remove(lane)
            self._close(lane)

    def _close(self, lane: _Lane) -> None:
        lane.close()
        if lane.task is not None and not lane.task.done():
            self._closing.add(lane.task)
            lane.task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        lanes = list(self._lanes)
        for lane in lanes:
            lane.close()
        self._idle.clear()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=30)


@asynccontextmanager
async def acquire_shared(config: PacingConfig) -> AsyncIterator[None]:
    """Hold one slot of the shared limit for the block; a no-op when none is configured.

    Prefect's own wait after a denied slot follows the server's Retry-After, which grows with
    the average slot occupancy (seconds for multi-second jobs) and leaves slots idle; asking
    again after a short jittered pause keeps the account full.
    """
    if not config.shared_limit:
        yield
        return
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency

    while True:
        try:
            cm = concurrency(
                config.shared_limit,
                occupy=1,
                max_retries=0,
                lease_duration=SHARED_LEASE_S,
                strict=True,
                raise_on_lease_renewal_failure=False,
            )
            await cm.__aenter__()
        except ConcurrencySlotAcquisitionError as exc:
            if not _is_locked(exc):
                raise
            await asyncio.sleep(config.shared_retry_s * (0.5 + random.random()))
            continue
        break
    try:
        yield
    except BaseException as exc:
        await cm.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        await cm.__aexit__(None, None, None)


def _is_locked(exc: BaseException) -> bool:
    """A 423 from the server: every slot is taken right now."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    return getattr(response, "status_code", None) == 423


async def ensure_shared_limit(name: str, limit: int) -> None:
    """Create the global concurrency limit ``name`` with ``limit`` slots, or resize it.

    Called by each run that names a shared limit and by ``make deploy``; the last caller's size
    wins, so every run and deployment on one account should agree on the account's concurrency.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True)
            )
            return
        if existing.limit != limit or not existing.active:
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=limit, active=True)
            )


def ensure_shared_limit_sync(name: str, limit: int) -> None:
    """``ensure_shared_limit`` for synchronous callers such as a deploy script."""
    asyncio.run(ensure_shared_limit(name, limit))


def make_pacer(config: PacingConfig) -> Pacer:
    """A pacer with the shared Prefect limit when the config names one."""
    return Pacer(config, SharedSlots(config) if config.shared_limit else None)
