"""Prefect artifacts of a run: a progress bar while jobs run, then results, costs and links.

What goes into them is computed in ``tasks.report``; this module only talks to Prefect.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable
from types import TracebackType
from typing import Any
from uuid import UUID

import httpx
from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from tasks.report import (
    REPORT_FILES,
    artifact_rows,
    budget_status,
    cost_markdown,
    cost_table,
    failures_by_reason,
    progress_line,
    report_url,
    results_frame,
)
from tasks.storage import Storage

ARTIFACT_ROWS = 200  # the UI table stays readable; the full table is in results.parquet/csv
PROGRESS_INTERVAL_S = 2.0  # at most one progress update per interval, whatever the job rate
log = logging.getLogger(__name__)


class JobProgress:
    """Counts finished jobs; a background loop pushes the count to a progress artifact.

    Counting is free; the server sees at most one update per ``interval_s`` (and a last one on
    exit), so 10,000 fast jobs do not turn into 10,000 API calls.
    """

    def __init__(
        self, total: int, *, interval_s: float = PROGRESS_INTERVAL_S, key: str = "progress"
    ) -> None:
        self.total, self.interval_s, self.key = total, interval_s, key
        self.by_status: Counter[str] = Counter()
        self.artifact_id: UUID | None = None
        self.updates = 0
        self._shown = -1
        self._loop: asyncio.Task[None] | None = None

    @property
    def done(self) -> int:
        return sum(self.by_status.values())

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 2)

    def advance(self, status: str) -> None:
        self.by_status[status] += 1

    async def track(self, job: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Await one job's row and count it by status."""
        row = await job
        self.advance(str(row.get("status")))
        return row

    async def flush(self) -> None:
        """Send the count if it changed since the last update."""
        if self.artifact_id is None or self.done == self._shown:
            return
        done = self.done
        try:
            await aupdate_progress_artifact(
                self.artifact_id, self.percent,
                description=progress_line(done, self.total, dict(self.by_status)),
            )  # fmt: skip
        except httpx.HTTPError as exc:  # a progress bar must never fail a paid run
            log.warning("progress update failed: %s", exc)
            return
        self._shown = done
        self.updates += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def __aenter__(self) -> JobProgress:
        self.artifact_id = await acreate_progress_artifact(
            self.percent, key=self.key, description=progress_line(0, self.total, {})
        )
        self._shown = 0
        self._loop = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        await self.flush()


async def publish_artifacts(
    storage: Storage, run_name: str, rows: list[dict[str, Any]], budget: float | None
) -> None:
    """Results table (problems first, capped), cost report, and a link to each report file."""
    results = results_frame(rows)
    table = artifact_rows(results, ARTIFACT_ROWS)
    base = f"runs/{run_name}"
    csv_url = report_url(storage, f"{base}/results.csv")
    await acreate_table_artifact(
        key="results", table=table,
        description=f"{len(table)} of {len(results)} rows of run {run_name} (problems first); "
        f"full table: [results.csv]({csv_url})",
    )  # fmt: skip
    await acreate_markdown_artifact(
        key="cost-report",
        markdown=cost_markdown(
            run_name,
            cost_table(results, budget),
            failures_by_reason(results),
            budget_status(results, budget),
        ),
        description=f"Cost of run {run_name} by endpoint and status",
    )
    for name in REPORT_FILES:
        await acreate_link_artifact(
            key=name.replace(".", "-").replace("_", "-"),
            link=report_url(storage, f"{base}/{name}"),
            link_text=name,
            description=f"{name} of run {run_name}",
        )
