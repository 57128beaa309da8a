"""The main flow end to end on the local engine, against a real (temporary) Prefect server."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import s3fs

from flows.params import RunParams
from flows.removal import remove_backgrounds
from tests.fakes.runs import write_manifest
from tests.fakes.seaweed import SeaweedS3

pytestmark = pytest.mark.usefixtures("prefect_server")


def run(params: RunParams) -> dict:
    return asyncio.run(remove_backgrounds(params))


def test_run_then_rerun_reprocesses_nothing(clips: dict[str, Path], tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    person = shutil.copy(clips["person"], inputs / "person.mp4")
    comp = shutil.copy(clips["composite"], inputs / "comp.mp4")
    manifest = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "p", "video_url": str(person), "background": "", "output_format": ""},
            {"id": "c", "video_url": str(comp), "background": "white", "output_format": "mkv_h264"},
            {"id": "p-again", "video_url": str(person), "background": "", "output_format": ""},
            {
                "id": "bad",
                "video_url": "ftp://nowhere/x.mp4",
                "background": "",
                "output_format": "",
            },
            {
                "id": "bad-opt",
                "video_url": str(person),
                "background": "",
                "output_format": "mp4_h264",
            },
        ],
    )
    out = tmp_path / "out"
    params = RunParams(manifest=str(manifest), output=str(out), run_name="first")
    summary = run(params)
    assert summary["counts"]["succeeded"] == 3  # p, c, and p-again sharing p's job
    assert summary["counts"]["invalid"] == 2
    results = pd.read_parquet(out / "runs/first/results.parquet")
    assert list(results["row"]) == [1, 2, 3, 4, 5]
    by_id = results.set_index("id")
    assert by_id.loc["p-again", "duplicate_of"] == 1
    assert by_id.loc["p-again", "job_key"] == by_id.loc["p", "job_key"]
    assert by_id.loc["bad", "error_code"] == "unsupported_scheme"
    assert by_id.loc["bad-opt", "error_code"] == "invalid_options"
    assert "carries no alpha" in by_id.loc["bad-opt", "error"]
    assert by_id.loc["p", "output_url"].endswith(".webm")
    assert by_id.loc["c", "output_url"].endswith(".mkv")
    assert len(list((out / "videos").iterdir())) == 2  # the duplicate ran once
    for name in ("results.csv", "cost_report.csv", "cost_report.md", "summary.json"):
        assert (out / "runs/first" / name).stat().st_size > 0
    ledger_before = {p.name: p.read_text() for p in (out / "jobs").iterdir()}

    # The inputs are gone: a re-run that decoded anything would fail instead of skipping.
    shutil.rmtree(inputs)
    again = run(params.model_copy(update={"run_name": "second"}))
    assert again["counts"]["skipped"] == 3 and again["counts"]["invalid"] == 2
    assert again["counts"]["succeeded"] == again["counts"]["failed"] == 0
    assert {p.name: p.read_text() for p in (out / "jobs").iterdir()} == ledger_before
    second = pd.read_csv(out / "runs/second/results.csv").set_index("id")
    assert second.loc["p", "sha256"] == by_id.loc["p", "sha256"]
    assert second.loc["p", "frames"] == by_id.loc["p", "frames"]


def test_demo_style_transparent_webm_plays_with_alpha(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"video_url": str(clips["composite"])}])
    summary = run(RunParams(manifest=str(manifest), output=str(tmp_path / "o"), run_name="d"))
    assert summary["counts"]["succeeded"] == 1
    results = pd.read_csv(tmp_path / "o/runs/d/results.csv")
    webm = Path(results.loc[0, "output_url"])
    with av.open(str(clips["composite"])) as c:
        input_frames = sum(1 for _ in c.decode(video=0))
    # Decoded here with libvpx-vp9 directly, not through matteflow's own verifier.
    with av.open(str(webm)) as c:
        stream = c.streams.video[0]
        assert stream.metadata.get("alpha_mode") == "1"
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        frames = [f for p in c.demux(stream) for f in decoder.decode(p)]
    assert len(frames) == input_frames
    assert frames[0].format.name == "yuva420p"
    alpha = frames[len(frames) // 2].to_ndarray(format="rgba")[..., 3]
    assert (alpha < 16).mean() > 0.2 and (alpha > 240).mean() > 0.1


def test_summary_json_has_counts_totals_and_no_secrets(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAL_KEY", "fal-secret-0123456789")
    manifest = write_manifest(tmp_path / "m.csv", [{"video_url": str(clips["silent"])}])
    run(RunParams(manifest=str(manifest), output=str(tmp_path / "o"), run_name="s"))
    text = (tmp_path / "o/runs/s/summary.json").read_text()
    summary = json.loads(text)
    assert summary["counts"]["succeeded"] == 1
    assert summary["totals"]["frames"] == 8 and summary["totals"]["cost_usd"] == 0.0
    assert summary["params"]["endpoint"] == "local"
    assert "fal-secret" not in text


@pytest.mark.integration
def test_s3_output_on_a_real_server(
    clips: dict[str, Path],
    tmp_path: Path,
    seaweed: SeaweedS3,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "matteflow-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "matteflow-test-secret")
    fs = s3fs.S3FileSystem(**seaweed.storage_options())
    fs.put_file(str(clips["person"]), f"{s3_bucket}/in/person.mp4")
    fs.pipe_file(
        f"{s3_bucket}/in/m.jsonl",
        json.dumps({"id": "p", "video_url": f"{s3_bucket}/in/person.mp4"}).encode() + b"\n",
    )
    params = RunParams(
        manifest=f"{s3_bucket}/in/m.jsonl",
        output=f"{s3_bucket}/out",
        run_name="s3",
        s3_endpoint_url=seaweed.endpoint_url,
        output_format="mov_proresks",
    )
    summary = run(params)
    assert summary["counts"]["succeeded"] == 1
    results = pd.read_parquet(fs.open(f"{s3_bucket}/out/runs/s3/results.parquet"))
    url = results.loc[0, "output_url"]
    assert url.startswith(f"{s3_bucket}/out/videos/") and url.endswith(".mov")
    assert fs.size(url) == results.loc[0, "bytes"]
    local = tmp_path / "back.mov"
    fs.get_file(url, str(local))
    with av.open(str(local)) as c:
        frame = next(c.decode(video=0))
    assert frame.format.name.startswith("yuva444p")
    assert np.asarray(frame.to_ndarray(format="rgba"))[..., 3].min() < 255
    assert fs.exists(f"{s3_bucket}/out/jobs/{results.loc[0, 'job_key']}.json")
