"""Pacing of one endpoint: a cap on jobs in flight, a submit-rate bucket, an optional shared cap.

The in-process cap and the token bucket cost nothing per job. A cap shared across workers
(a Prefect global concurrency limit, ``flows/concurrency.py``) is passed in as a ``SharedCap``;
a slot is held for the length of a whole job (never per HTTP call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

from aiolimiter import AsyncLimiter


class SharedCap(Protocol):
    """A cap on jobs in flight held across processes (one slot per job)."""

    acquired: int

    def slot(self) -> AbstractAsyncContextManager[None]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PacingConfig:
    """How one endpoint is paced; ``shared_limit`` names a Prefect global concurrency limit."""

    max_in_flight: int
    submit_rate_per_s: float
    shared_limit: str | None = None
    shared_retry_s: float = 0.5  # our own wait between denied slot requests (see acquire_shared)

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.submit_rate_per_s <= 0:
            raise ValueError("submit_rate_per_s must be positive")


class Pacer:
    """Admission for one endpoint: ``async with pacer.job():`` around each whole job."""

    def __init__(self, config: PacingConfig, shared: SharedCap | None = None) -> None:
        self.config = config
        self._gate = asyncio.Semaphore(config.max_in_flight)
        # Bucket of max_in_flight tokens refilled at the submit rate: a full account's worth of
        # jobs may start at once, after that starts follow the configured rate.
        burst = float(config.max_in_flight)
        self._bucket = AsyncLimiter(burst, burst / config.submit_rate_per_s)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.shared = shared

    async def aclose(self) -> None:
        """Give back every shared slot this process still holds."""
        if self.shared is not None:
            await self.shared.aclose()

    async def submit_token(self) -> None:
        """Wait for the submit-rate bucket: called right before a request goes to the endpoint."""
        await self._bucket.acquire()

    @asynccontextmanager
    async def job(self) -> AsyncIterator[None]:
        """Hold one in-flight place (in process, and in the shared limit) for a whole job."""
        async with self._gate, self.shared.slot() if self.shared else nullcontext():
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1
