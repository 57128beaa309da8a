"""The end of a run as Prefect shows it: its final state and its events.

A run whose rows failed ends "Completed with failures" (a Completed state with its own name,
counts in its message) or Failed past its ``fail_when`` tolerance; a user error (an unreadable
manifest) ends it Failed with the one-line reason and no traceback. Every top-level run emits
``matteflow.run.finished`` (counts, cost, report URL), and up to ``ROW_EVENTS_MAX`` failed rows
a ``matteflow.row.failed`` each, so automations can act on them. Shards leave both to their
parent run: their state is read by the parent, which merges their rows.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.client.schemas.objects import State
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from flows.params import RunParams
from flows.preflight import user_error_line
from tasks.errors import MatteflowError, RunFailed
from tasks.ledger.results import ResultRow
from tasks.report.outcome import (
    FAILURE_STATUSES,
    WITH_FAILURES,
    RunOutcome,
    Verdict,
    judge,
    run_finished_payload,
)

RUN_FINISHED = "matteflow.run.finished"
ROW_FAILED = "matteflow.row.failed"
ROW_EVENTS_MAX = 20  # per run: enough to act on, never thousands of events for a bad night
OUTCOME_LABEL = "matteflow.run.outcome"  # a label of the event's resource, for automations
log = logging.getLogger(__name__)


def is_shard(run_name: str) -> bool:
    return "/shards/" in run_name


def run_resource(run_name: str, outcome: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"matteflow.run.{run_name}",
        "prefect.resource.name": run_name,
        OUTCOME_LABEL: outcome,
    }


def _related() -> list[dict[str, str]]:
    run_id = flow_run.get_id()
    if not run_id:
        return []
    return [
        {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"}
    ]


def emit_run_finished(run_name: str, outcome: str, payload: dict[str, Any]) -> None:
    emit_event(
        RUN_FINISHED,
        resource=run_resource(run_name, outcome),
        related=_related(),
        payload=payload,
    )


def emit_row_failures(run_name: str, rows: list[ResultRow]) -> int:
    """One ``matteflow.row.failed`` per failed row, the first ``ROW_EVENTS_MAX`` of them."""
    failed = [r for r in rows if r.status in FAILURE_STATUSES][:ROW_EVENTS_MAX]
    for row in failed:
        emit_event(
            ROW_FAILED,
            resource={
                "prefect.resource.id": f"matteflow.row.{run_name}.{row.row}",
                "prefect.resource.name": f"{run_name} row {row.row}",
            },
            related=_related(),
            payload={
                "run_name": run_name,
                "row": row.row,
                "id": row.id,
                "video_url": row.video_url,  # redacted by ResultRow
                "status": row.status.value,
                "error_code": row.error_code.value if row.error_code else None,
                "error": row.error,
            },
        )
    return len(failed)


def verdict_for(params: RunParams, summary: dict[str, Any]) -> Verdict:
    return judge(
        summary["counts"],
        summary["rows"],
        float(summary["totals"]["cost_usd"]),
        failed_rows_over=params.fail_when.failed_rows_over,
        failed_percent_over=params.fail_when.failed_percent_over,
    )


def finish_run(run_name: str, params: RunParams, summary: dict[str, Any]) -> Any:
    """The flow's return value: the summary (Completed), or a state that shows failures."""
    if is_shard(run_name):
        return summary
    verdict = verdict_for(params, summary)
    emit_run_finished(run_name, verdict.outcome.value, run_finished_payload(summary, verdict))
    message = f"{verdict.message}; report: {summary['report_url']}"
    if verdict.outcome is RunOutcome.ok:
        return summary
    if verdict.outcome is RunOutcome.failures:
        return Completed(name=WITH_FAILURES, message=message, data=summary)
    return Failed(message=message, data=RunFailed(message, summary=summary))


def user_error_state(run_name: str, exc: MatteflowError) -> State[Any]:
    """A run that cannot start ends Failed with the reason, and says so in one event."""
    line = user_error_line(exc)
    if not is_shard(run_name):
        payload = {"run_name": run_name, "outcome": RunOutcome.failed.value, "message": line}
        emit_run_finished(run_name, RunOutcome.failed.value, payload | {"error_code": exc.code})
    return Failed(message=line, data=exc)
