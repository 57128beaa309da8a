"""Row ids never escape the output prefix, and a deployment run never reads the worker's disk
unless an allow-list says so."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import s3fs

from flows.params import RunParams
from flows.removal import remove_backgrounds
from tasks.endpoints import endpoint_info
from tasks.engine.job import run_local_job
from tasks.errors import ManifestError
from tasks.ledger.jobs import Job, job_key, safe_stem
from tasks.manifest.plan import plan_jobs, resolve_params
from tasks.manifest.read import Manifest, ManifestRow
from tasks.media.preflight import InputSettings, LocalInputPolicy
from tasks.storage.store import Storage
from tests.fakes.http_files import HttpFiles
from tests.fakes.seaweed import SeaweedS3
from tests.hardening.conftest import EllipseSegmenter

LOCAL = endpoint_info("local")
NASTY_IDS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "a/../../b",
    "C:\\Windows\\system32",
    "~/.ssh/id_rsa",
    "%2e%2e%2f%2e%2e%2fx",
    "con",
    "名前 with spaces",
    "a\x00b\nc",
    "x" * 500,
    "-rf",
    ".hidden",
    'a:b*c?d|e<f>g"h',
    "\u202eevil.mp4",
]


@pytest.mark.parametrize("row_id", NASTY_IDS)
def test_safe_stem_is_one_plain_bounded_name(row_id: str, tally: Counter[str]) -> None:
    stem = safe_stem(row_id, "0123456789abcdef" * 2)
    tally["path_ids_tried"] += 1
    assert "/" not in stem and "\\" not in stem and stem not in (".", "..")
    assert not stem.startswith((".", "-", "_")) and 12 <= len(stem) <= 73
    assert stem.isascii() and stem.isprintable()
    assert stem.endswith("0123456789ab")


def job_for(url: str, row_id: str, smoothing: float) -> Job:
    params = resolve_params(LOCAL, {}, {"smoothing": smoothing})
    return Job(
        key=job_key(url, "local", params),
        row=1,
        id=row_id,
        video_url=url,
        endpoint="local",
        params=params,
    )


def test_nasty_ids_write_inside_the_output_prefix_locally(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "out"
    storage = Storage(str(out))
    for n, row_id in enumerate(["../../etc/passwd", "/abs/evil", "..", "a\\..\\..\\b"]):
        job = job_for(str(clips["silent"]), row_id, 0.5 + n / 10)
        row = run_local_job(job, storage, segmenter_factory=EllipseSegmenter)
        written = Path(row["output_url"]).resolve()
        assert written.parent == (out / "videos").resolve(), written
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == []


@pytest.mark.integration
def test_nasty_ids_write_inside_the_output_prefix_on_s3(
    clips: dict[str, Path], seaweed: SeaweedS3, s3_bucket: str
) -> None:
    storage = Storage(f"{s3_bucket}/out", seaweed.storage_options())
    for n, row_id in enumerate(["../../etc/passwd", "/abs/evil", "名前/../x"]):
        job = job_for(str(clips["silent"]), row_id, 0.5 + n / 10)
        row = run_local_job(job, storage, segmenter_factory=EllipseSegmenter)
        assert row["status"] == "succeeded", row["error"]
        assert row["output_url"].startswith(f"{s3_bucket}/out/videos/")
        assert "/" not in row["output_url"].removeprefix(f"{s3_bucket}/out/videos/")
    fs = s3fs.S3FileSystem(**seaweed.storage_options())
    keys = fs.find(s3_bucket)
    assert keys and all(k.startswith(f"{s3_bucket[5:]}/out/") for k in keys)


def manifest_of(urls: list[str]) -> Manifest:
    rows = [ManifestRow(row=n, id=str(n), video_url=u) for n, u in enumerate(urls, start=1)]
    return Manifest(url="m.csv", rows=rows)


def test_policy_refuses_local_rows_unless_allowed_or_under_a_root(
    tmp_path: Path, tally: Counter[str]
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "a.mp4").write_bytes(b"x")
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"x")
    (allowed / "link.mp4").symlink_to(secret)
    urls = [
        "https://e.com/a.mp4",
        "s3://bucket/a.mp4",
        str(allowed / "a.mp4"),
        f"file://{allowed}/a.mp4",
        str(secret),
        f"file://{secret}",
        "/etc/passwd.mp4",
        f"{allowed}/../secret.mp4",
        str(allowed / "link.mp4"),
        "relative/clip.mp4",
    ]
    settings = InputSettings(local_roots=[])
    deployment = LocalInputPolicy.for_run(False, [str(allowed)], settings)
    plan = plan_jobs(manifest_of(urls), LOCAL, {}, local_inputs=deployment)
    tally["local_inputs_tried"] += len(urls)
    assert sorted(j.row for j in plan.jobs) == [1, 2, 3, 4]
    refused = {r["row"]: r for r in plan.invalid}
    assert sorted(refused) == [5, 6, 7, 8, 9, 10]
    assert {r["error_code"] for r in refused.values()} == {"local_input_refused"}
    assert all("allow_local_inputs" in r["error"] for r in refused.values())

    nothing = LocalInputPolicy.for_run(False, None, settings)
    plan = plan_jobs(manifest_of(urls), LOCAL, {}, local_inputs=nothing)
    assert sorted(j.row for j in plan.jobs) == [1, 2]

    cli = LocalInputPolicy.for_run(True, None, settings)
    assert len(plan_jobs(manifest_of(urls), LOCAL, {}, local_inputs=cli).jobs) == len(urls)

    denied = LocalInputPolicy.for_run(True, [str(allowed)], InputSettings(deny_local=True))
    plan = plan_jobs(manifest_of(urls), LOCAL, {}, local_inputs=denied)
    assert sorted(j.row for j in plan.jobs) == [1, 2]


def test_worker_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATTEFLOW_INPUT_LOCAL_ROOTS", f'["{tmp_path}"]')
    monkeypatch.setenv("MATTEFLOW_INPUT_DENY_LOCAL", "true")
    monkeypatch.setenv("MATTEFLOW_INPUT_MAX_FRAMES", "10")
    settings = InputSettings()
    assert settings.local_roots == [str(tmp_path)] and settings.deny_local
    assert settings.max_frames == 10


def run_flow(params: RunParams) -> dict[str, Any]:
    return asyncio.run(remove_backgrounds(params))


@pytest.mark.usefixtures("prefect_server")
def test_a_deployment_run_does_not_read_the_workers_disk(
    clips: dict[str, Path],
    tmp_path: Path,
    http_files: HttpFiles,
    monkeypatch: pytest.MonkeyPatch,
    tally: Counter[str],
) -> None:
    """No allow_local_inputs (the deployment default) and no roots: local rows end invalid."""
    monkeypatch.delenv("MATTEFLOW_INPUT_LOCAL_ROOTS", raising=False)
    good = http_files.serve(clips["silent"], "silent.mp4")
    text = f"id,video_url\nweb,{good}\ndisk,{clips['silent']}\nfile,file://{os.path.abspath(clips['silent'])}\n"
    manifest_url = http_files.serve(text.encode(), "m.csv", content_type="text/csv")
    out = tmp_path / "out"
    summary = run_flow(RunParams(manifest=manifest_url, output=str(out), run_name="deploy"))
    tally["local_inputs_tried"] += 2
    assert summary["counts"]["succeeded"] == 1 and summary["counts"]["invalid"] == 2
    results = (out / "runs/deploy/results.csv").read_text()
    assert results.count("local_input_refused") == 2

    local_manifest = tmp_path / "m.csv"
    local_manifest.write_text(text)
    with pytest.raises(ManifestError) as info:
        run_flow(RunParams(manifest=str(local_manifest), output=str(out), run_name="d2"))
    assert info.value.code == "local_input_refused"
    assert "manifest" in str(info.value)

    # A manifest the run keeps in its own output root (a shard's) is its own file.
    (out / "shards").mkdir()
    own = out / "shards" / "m.csv"
    own.write_text(f"id,video_url\nweb,{good}\n")
    summary = run_flow(RunParams(manifest=str(own), output=str(out), run_name="d3"))
    assert summary["counts"]["skipped"] == 1
