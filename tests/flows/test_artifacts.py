"""A real flow run on the session Prefect server: its artifacts, and reports that add up."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.params import RunParams
from tests.fakes import runs
from tests.tasks.report.test_tables import assert_cost_report_adds_up

pytestmark = pytest.mark.integration


def write_manifest(path: Path, clips: dict[str, Path], junk: Path) -> Path:
    rows = [
        {"id": "person", "video_url": str(clips["person"]), "background": "", "output_format": ""},
        {
            "id": "green",
            "video_url": str(clips["silent"]),
            "background": "green",
            "output_format": "mp4_h264",
        },
        {
            "id": "gone",
            "video_url": str(path.parent / "missing.mp4"),
            "background": "",
            "output_format": "",
        },
        {"id": "junk", "video_url": str(junk), "background": "", "output_format": ""},
        {
            "id": "bad-options",
            "video_url": str(clips["person"]),
            "background": "transparent",
            "output_format": "mp4_h264",
        },
        {
            "id": "person-again",
            "video_url": str(clips["person"]),
            "background": "",
            "output_format": "",
        },
    ]
    return runs.write_manifest(path, rows)


async def artifacts_of(flow_run_id: UUID) -> dict[str, Any]:
    async with get_client() as client:
        found = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


async def test_flow_run_publishes_results_costs_progress_and_links(
    prefect_server: None, clips: dict[str, Path], tmp_path: Path
) -> None:
    from flows.removal import remove_backgrounds

    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    manifest = write_manifest(tmp_path / "manifest.csv", clips, junk)
    output = tmp_path / "out"
    params = RunParams(manifest=str(manifest), output=str(output), run_name="art", budget_usd=1.0)
    state = await remove_backgrounds(params, return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    folder = output / "runs" / "art"
    results = pd.read_csv(folder / "results.csv").set_index("id")
    assert results["status"].to_dict() == {
        "person": "succeeded",
        "green": "succeeded",
        "gone": "failed",
        "junk": "failed",
        "bad-options": "invalid",
        "person-again": "succeeded",
    }
    assert results.loc["gone", "error_code"] == "input_not_found"
    assert results.loc["junk", "error_code"] == "input_undecodable"
    assert results.loc["person", "verified"] and results.loc["person", "has_alpha"]
    assert 0.05 < results.loc["person", "fg_fraction"] < 0.95
    assert results.loc["green", "fg_fraction"] > 0.05 and not results.loc["green", "has_alpha"]
    assert_cost_report_adds_up(folder, 1.0)

    arts = await artifacts_of(flow_run_id)
    links = {"results-parquet", "results-csv", "cost-report-csv", "cost-report-md", "summary-json"}
    assert {"results", "cost-report", "progress"} | links <= set(arts)
    table = arts["results"]
    assert table.type == "table"
    shown = pd.read_json(io.StringIO(str(table.data)))
    assert len(shown) == 6
    assert list(shown["status"][:3]) == ["failed", "failed", "invalid"]  # problems first
    assert "results.csv" in (table.description or "")
    assert arts["cost-report"].type == "markdown"
    assert "## Failures by reason" in str(arts["cost-report"].data)
    assert "input_not_found" in str(arts["cost-report"].data)
    assert arts["progress"].type == "progress" and float(arts["progress"].data) == 100.0
    assert "4 of 4 jobs finished" in (arts["progress"].description or "")
    for key in links:
        assert arts[key].type == "markdown"  # a link artifact is stored as a markdown link
        url = str(arts[key].data).split("](")[1].rstrip(")")
        assert Path(url.removeprefix("file://")).is_file(), url
