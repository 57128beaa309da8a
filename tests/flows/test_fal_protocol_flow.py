"""The flow against fal's harder answers (issue 13): fal's own 500s on status polls and 503s on
submits, a 422 against the budget, a plain CDN 403, and the queue options as run options."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.errors import RunFailed
from tests.fakes.fal_server import PIXELCUT, FakeFal, Faults
from tests.fakes.runs import pixelcut_params, write_manifest


class _ByCall(Faults):
    """15% of status polls answer fal's own 500, 15% of submits a gateway 503."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.status = Faults(rate=0.15, kinds=("500",), calls=("status",), seed=21)
        self.submit = Faults(rate=0.15, kinds=("503",), calls=("submit",), seed=22)

    def pick(self, call: str) -> str | None:
        return (self.submit if call == "submit" else self.status).pick(call)


@pytest.mark.slow
async def test_fifty_rows_with_status_500s_and_submit_503s(
    prefect_server: None, fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    from flows.removal import remove_backgrounds

    fake_fal.latency_s = 0.05  # a few polls per job
    fake_fal.faults = _ByCall()
    fake_fal.status_stream = "off"  # no event stream here: status by polls, which the 500s hit
    urls = [fake_fal.serve_file(clips["silent"], f"s{i:02d}.mp4") for i in range(50)]
    rows = [{"id": f"s{i:02d}", "video_url": u} for i, u in enumerate(urls)]
    rows[7]["output_format"] = "mp4_h264"  # transparent H.264: invalid, never sent
    manifest = write_manifest(tmp_path / "m.csv", rows)
    params = pixelcut_params(manifest, tmp_path / "o", "faults", max_in_flight=8)
    await remove_backgrounds(params)
    results = pd.read_csv(tmp_path / "o" / "runs" / "faults" / "results.csv")
    assert len(results) == 50
    assert set(results["status"]) <= {"succeeded", "invalid"}, results["error"].dropna().tolist()
    assert (results["status"] == "invalid").sum() == 1
    valid = [u for i, u in enumerate(urls) if i != 7]
    assert all(fake_fal.accepted_inputs[(PIXELCUT, u)] == 1 for u in valid)
    assert sum(fake_fal.accepted_inputs.values()) == 49
    assert fake_fal.calls[("status", 500)] >= 10 and fake_fal.calls[("submit", 503)] >= 3


async def test_422_counts_against_the_budget(
    prefect_server: None, fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    """Budget $0.05: two 422s (possibly billed $0.022 each) leave room for no third job (counted
    at $0, all three would be sent)."""
    from flows.removal import remove_backgrounds

    urls = [fake_fal.serve_file(clips["silent"], f"bad{i}.mp4") for i in range(3)]
    fake_fal.reject_inputs.add("bad")
    manifest = write_manifest(tmp_path / "m.csv", [{"video_url": u} for u in urls])
    params = pixelcut_params(
        manifest,
        tmp_path / "o",
        "budget",
        max_in_flight=1,
        budget_usd=0.05,
        fal_priority="low",
        fal_start_timeout_s=600,
        fal_no_retry=True,
    )
    with pytest.raises(RunFailed) as failed:  # no row succeeded: the run ends Failed (issue 15)
        await remove_backgrounds(params)
    summary = failed.value.summary
    results = pd.read_csv(tmp_path / "o" / "runs" / "budget" / "results.csv")
    assert sorted(results["status"]) == ["failed", "failed", "skipped_budget"]
    assert sorted(results["possibly_billed_usd"]) == [0.0, 0.022, 0.022]
    assert set(results[results["status"] == "failed"]["error_code"]) == {"fal_validation_error"}
    assert summary["totals"]["possibly_billed_usd"] == pytest.approx(0.044)
    assert fake_fal.accepted[PIXELCUT] == 2
    sent = fake_fal.submit_headers[0]
    assert sent["x-fal-queue-priority"] == "low" and sent["x-fal-no-retry"] == "1"
    assert sent["x-fal-request-timeout"] == "600"
