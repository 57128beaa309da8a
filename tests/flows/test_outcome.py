"""A run's state tells the truth, and its events say so: read back through the Prefect API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import pytest

from flows.outcome import ROW_EVENTS_MAX, ROW_FAILED, RUN_FINISHED
from flows.params import FailWhen, RunParams
from flows.removal import remove_backgrounds
from tasks.errors import RunFailed

pytestmark = pytest.mark.usefixtures("prefect_server")


def manifest_with_a_failed_row(tmp_path: Path, clip: Path, bad: int = 1) -> Path:
    rows = [{"id": "ok", "video_url": str(clip)}]
    rows += [{"id": f"gone-{i}", "video_url": str(tmp_path / f"gone-{i}.mp4")} for i in range(bad)]
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


async def events_of(flow_run_id: UUID, name: str, want: int) -> list[Any]:
    """Events of ``name`` related to the flow run, once the server has stored ``want`` of them
    (the event persister writes in batches; the deadline only bounds a broken server)."""
    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
    )
    from prefect.types._datetime import now

    flt = EventFilter(
        event=EventNameFilter(name=[name]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        occurred=EventOccurredFilter(since=now("UTC") - pd.Timedelta(hours=1)),
    )
    deadline = time.monotonic() + 60
    found: list[Any] = []
    async with get_client() as client:
        while time.monotonic() < deadline:
            found = (await client.read_events(filter=flt, limit=50)).events
            if len(found) >= want:
                return found
            await asyncio.sleep(0.5)
    return found


async def test_failed_row_ends_completed_with_failures_and_emits_events(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    from prefect import get_client

    manifest = manifest_with_a_failed_row(tmp_path, clips["silent"])
    params = RunParams(manifest=str(manifest), output=str(tmp_path / "out"), run_name="mixed")
    state = await remove_backgrounds(params, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    async with get_client() as client:
        stored = (await client.read_flow_run(flow_run_id)).state
    assert stored is not None
    assert stored.type.value == "COMPLETED" and stored.name == "Completed with failures"
    assert stored.message is not None and stored.message.startswith("1 of 2 rows failed (1 failed)")
    assert "report:" in stored.message

    [finished] = await events_of(flow_run_id, RUN_FINISHED, 1)
    assert finished.resource["matteflow.run.outcome"] == "failures"
    payload = finished.payload
    assert payload["run_name"] == "mixed" and payload["rows"] == 2 and payload["failed_rows"] == 1
    assert payload["counts"]["succeeded"] == 1 and payload["counts"]["failed"] == 1
    assert payload["cost_usd"] == 0.0 and payload["report_url"].endswith("runs/mixed")
    [row] = await events_of(flow_run_id, ROW_FAILED, 1)
    assert row.payload["id"] == "gone-0" and row.payload["error_code"] == "input_not_found"


async def test_past_fail_when_the_run_is_failed_with_its_report(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    from prefect import get_client

    bad = ROW_EVENTS_MAX + 2
    manifest = manifest_with_a_failed_row(tmp_path, clips["silent"], bad=bad)
    params = RunParams(
        manifest=str(manifest),
        output=str(tmp_path / "out"),
        run_name="strict",
        fail_when=FailWhen(failed_percent_over=50),
    )
    state = await remove_backgrounds(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(RunFailed) as info:
        await state.aresult()
    assert info.value.summary["counts"]["failed"] == bad  # the report is still there
    assert (tmp_path / "out/runs/strict/results.parquet").exists()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    async with get_client() as client:
        stored = (await client.read_flow_run(flow_run_id)).state
    assert stored is not None and stored.type.value == "FAILED"
    assert stored.message is not None and stored.message.startswith(f"{bad} of {bad + 1} rows")
    [finished] = await events_of(flow_run_id, RUN_FINISHED, 1)
    assert finished.resource["matteflow.run.outcome"] == "failed"
    rows = await events_of(flow_run_id, ROW_FAILED, ROW_EVENTS_MAX)
    assert len(rows) == ROW_EVENTS_MAX  # bounded: not one per failed row


async def test_a_clean_run_is_plain_completed(clips: dict[str, Path], tmp_path: Path) -> None:
    manifest = manifest_with_a_failed_row(tmp_path, clips["silent"], bad=0)
    params = RunParams(manifest=str(manifest), output=str(tmp_path / "out"), run_name="clean")
    state = await remove_backgrounds(params, return_state=True)
    assert state.is_completed() and state.name == "Completed"
    assert (await state.aresult())["counts"]["succeeded"] == 1
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    [finished] = await events_of(flow_run_id, RUN_FINISHED, 1)
    assert finished.resource["matteflow.run.outcome"] == "ok"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (None, "manifest_not_found"),
        ("", "manifest_empty"),
        ("url\nx.mp4\n", "manifest_no_video_url"),
    ],
)
async def test_user_error_in_a_flow_run_is_failed_without_traceback(
    tmp_path: Path, content: str | None, code: str
) -> None:
    """As from the UI: the run ends Failed with the one line, and its logs hold no traceback."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    manifest = tmp_path / "m.csv"
    if content is not None:
        manifest.write_text(content)
    params = RunParams(
        manifest=str(manifest), output=str(tmp_path / "out"), allow_local_inputs=True
    )
    state = await remove_backgrounds(params, return_state=True)
    assert state.is_failed()
    assert state.message is not None and state.message.startswith(f"error ({code}): ")
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + 60
    async with get_client() as client:
        while time.monotonic() < deadline:
            logs = await client.read_logs(log_filter=flt)
            if any("Finished in state" in log.message for log in logs):
                break
            await asyncio.sleep(0.5)
    text = "\n".join(log.message for log in logs)
    assert f"error ({code})" in text and "Finished in state Failed" in text
    assert "Traceback" not in text
