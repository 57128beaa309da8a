"""Cheap metadata probes of inputs, and where an input can be read from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import InputError
from tasks.ledger.jobs import Job
from tasks.media.facts import read_video_facts
from tasks.media.inputs import local_path, readable_location
from tasks.run.cost import price_for
from tasks.run.estimate import estimate_jobs
from tests.fakes.fal_server import FakeFal


def test_probe_local_and_http(clips: dict[str, Path], fake_fal: FakeFal) -> None:
    local = read_video_facts(str(clips["person"]))
    assert (local.frames, local.width, local.height, local.frames_exact) == (8, 64, 48, True)
    remote = read_video_facts(fake_fal.serve_file(clips["person"]))
    assert remote.frames == 8 and remote.duration_s == pytest.approx(0.4, abs=0.05)


def test_probe_errors_hide_query_strings(tmp_path: Path, fake_fal: FakeFal) -> None:
    with pytest.raises(InputError) as info:
        read_video_facts(f"{fake_fal.base_url}/files/none/x.mp4?X-Amz-Signature=secret")
    assert "secret" not in str(info.value) and info.value.code == "input_unreadable"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(InputError):
        read_video_facts(str(junk))


def test_locations() -> None:
    assert local_path("/a/b.mp4") == Path("/a/b.mp4")
    assert local_path("file:///a/b%20c.mp4") == Path("/a/b c.mp4")
    assert local_path("https://x/b.mp4") is None and local_path("s3://b/k.mp4") is None
    assert readable_location("https://x/b.mp4", 600, None) == "https://x/b.mp4"
    with pytest.raises(InputError, match="not found"):
        readable_location("/nope/x.mp4", 600, None)


def test_estimates_per_price_unit(clips: dict[str, Path]) -> None:
    jobs = [
        Job(
            key="k1", row=1, id="a", video_url=str(clips["person"]), endpoint="pixelcut", params={}
        ),
        Job(key="k2", row=2, id="b", video_url="/nope.mp4", endpoint="pixelcut", params={}),
    ]
    rows = estimate_jobs(jobs, price_for("pixelcut"), None)
    assert rows[0]["estimated_cost_usd"] == 0.022 and rows[0]["frames"] == 8
    assert rows[1]["estimated_cost_usd"] == 0.0 and "input_not_found" in rows[1]["error"]
    birefnet = estimate_jobs(jobs[:1], price_for("birefnet"), None)
    assert birefnet[0]["estimated_cost_usd"] == pytest.approx(8 / 10.0 * 0.00111, abs=1e-6)
