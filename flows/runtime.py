"""What a run needs from Prefect while its jobs run: cancel requests and a progress artifact.

Cancelling a flow run in the UI moves it to CANCELLING; a worker then sends SIGTERM to the
process; a terminal user presses Ctrl-C. All reach the run as one ``asyncio.Event``, so the worker pool can cancel the fal
jobs in flight, let the ledger record them and write the partial report before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run

from tasks.ledger.results import ResultRow
from tasks.run.progress import RunProgress

CANCEL_POLL_S = 2.0  # how often the run asks the server whether it was cancelled
PROGRESS_EVERY_S = 2.0  # at most one progress artifact update per this many seconds


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@asynccontextmanager
async def cancel_requests(cancel: asyncio.Event) -> AsyncIterator[None]:
    """Set ``cancel`` on SIGTERM (a Prefect worker), SIGINT (Ctrl-C) or when the flow run is
    marked CANCELLING on the server.

    Ctrl-C is taken here too instead of left to ``asyncio.run``'s own handler, which cancels
    the main task: that cancellation could land inside Prefect's engine rather than the worker
    pool, and the run then went on to the end (seen in CI: a Ctrl-C that paid for every job).
    A second Ctrl-C leaves at once (``quit_now``).
    """
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}
    interrupts = 0

    def stop(sig: signal.Signals) -> None:
        nonlocal interrupts
        interrupts += sig is signal.SIGINT
        if interrupts > 1:
            quit_now()
        cancel.set()

    try:
        for sig in STOP_SIGNALS:
            handler = signal.getsignal(sig)
            loop.add_signal_handler(sig, stop, sig)
            previous[sig] = handler
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: no signals
        pass
    watcher = asyncio.create_task(_watch_state(cancel), name="matteflow-cancel-poll")
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def quit_now() -> None:
    """A second Ctrl-C: leave at once, as a kill would, without the wrap-up.

    Nothing paid is lost: every request id, saved result and claim is already in the ledger
    (the kill -9 tests hold the same promise), and the next run picks them up.
    """
    sys.stderr.write(
        "second Ctrl-C: stopping now, without the report; run the same command again to "
        "continue (jobs at fal are followed, none is paid twice)\n"
    )
    sys.stderr.flush()
    os._exit(130)


async def _watch_state(cancel: asyncio.Event) -> None:
    run_id = flow_run.get_id()
    if run_id is None:
        return
    async with get_client() as client:
        while not cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_S)
            try:
                run = await client.read_flow_run(UUID(str(run_id)))
            except Exception:  # a missed poll is not a reason to stop the run
                continue
            if run.state is not None and run.state.type in (
                StateType.CANCELLING,
                StateType.CANCELLED,
            ):
                get_run_logger().warning("flow run cancelled on the server: stopping the jobs")
                cancel.set()


@asynccontextmanager
async def progress_artifact(progress: RunProgress) -> AsyncIterator[None]:
    """A Prefect progress artifact that follows ``progress`` at a bounded update rate."""
    artifact_id = await acreate_progress_artifact(
        progress=progress.percent, key="progress", description=progress.describe()
    )

    async def follow() -> None:
        shown = -1
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            if progress.done != shown:
                shown = progress.done
                await aupdate_progress_artifact(
                    artifact_id, progress=progress.percent, description=progress.describe()
                )

    follower = asyncio.create_task(follow(), name="matteflow-progress")
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower
        with contextlib.suppress(Exception):  # the report matters more than the last tick
            await aupdate_progress_artifact(
                artifact_id, progress=progress.percent, description=progress.describe()
            )


def with_run(run_name: str, rows: list[ResultRow]) -> list[ResultRow]:
    """Rows that say which run reports them and which flow run produced them: a shard's rows
    keep their child flow run's id; rows made here take this flow run's id."""
    here = str(flow_run.id) if flow_run.id else None
    return [
        row.model_copy(update={"run_name": run_name, "flow_run_id": row.flow_run_id or here})
        for row in rows
    ]
