"""Prefect artifacts of a run: a progress bar while jobs run, then results, costs and links.

What goes into them is computed in ``tasks.report.tables``; this module only talks to Prefect.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)

from tasks.ledger.results import ResultRow
from tasks.report.tables import (
    OK_STATUSES,
    REPORT_FILES,
    artifact_rows,
    budget_status,
    cost_markdown,
    cost_table,
    failures_by_reason,
    report_url,
    results_frame,
)
from tasks.storage.store import Storage

ARTIFACT_ROWS = 200  # the UI table stays readable; the full table is in results.parquet/csv
PROGRESS_INTERVAL_S = 2.0  # at most one progress update per interval, whatever the job rate
log = logging.getLogger(__name__)


async def publish_artifacts(
    storage: Storage,
    run_name: str,
    rows: list[ResultRow],
    budget: float | None,
    gallery_url: str | None = None,
) -> None:
    """Results table (problems first, capped), cost report, a link to each report file, and
    the gallery's link with the counts it shows first."""
    results = results_frame(rows)
    table = artifact_rows(results, ARTIFACT_ROWS)
    base = f"runs/{run_name}"
    csv_url = report_url(storage, f"{base}/results.csv")
    await acreate_table_artifact(
        key="results",
        table=table,
        description=f"{len(table)} of {len(results)} rows of run {run_name} (problems first); "
        f"full table: [results.csv]({csv_url})",
    )
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
    if gallery_url:
        await acreate_markdown_artifact(
            key="gallery",
            markdown=gallery_markdown(run_name, gallery_url, results),
            description=f"Contact sheets of run {run_name}",
        )


def gallery_markdown(run_name: str, url: str, results: Any) -> str:
    """A link to the gallery page, saying how many problem rows it opens with."""
    problems = int((~results["status"].isin(OK_STATUSES)).sum())
    return (
        f"# Gallery: {run_name}\n\n[Open gallery.html]({url}): a contact sheet per video "
        "(input | matte on a checkerboard | result over a colour), "
        f"{problems} failed row(s) first, then flagged ones.\n\n"
        "Open it from the run folder (local disk, or a copy of the bucket's folder): "
        "its images are relative links.\n"
    )
