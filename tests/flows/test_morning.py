"""What a catalog team sees in the morning: the gallery (in headless Chromium) and the catalog."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.params import RunParams
from flows.removal import remove_backgrounds
from tests.fakes.runs import write_manifest

pytestmark = pytest.mark.usefixtures("prefect_server")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def night(
    prefect_server: None, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Any]]:
    """One run with a transparent output, a coloured one, a missing input and an invalid row."""
    d = tmp_path_factory.mktemp("night")
    manifest = write_manifest(
        d / "m.csv",
        [
            {"id": "person", "video_url": str(clips["person"]), "background": ""},
            {"id": "composite", "video_url": str(clips["composite"]), "background": "white"},
            {"id": "gone", "video_url": str(d / "gone.mp4"), "background": ""},
            {"id": "bad", "video_url": "ftp://nowhere/x.mp4", "background": ""},
        ],
    )
    params = RunParams(manifest=str(manifest), output=str(d / "out"), run_name="night")
    state = asyncio.run(remove_backgrounds(params, return_state=True))
    yield d / "out", state


def test_gallery_has_a_sheet_per_output_problems_first(night: tuple[Path, Any]) -> None:
    out, state = night
    page = out / "runs/night/gallery.html"
    text = page.read_text()
    cards = re.findall(r'<div class="card (\w+)" id="row-(\d+)">', text)
    assert [kind for kind, _ in cards] == ["bad", "bad", "ok", "ok"]
    assert {n for kind, n in cards if kind == "bad"} == {"3", "4"}
    assert "input_not_found" in text and "unsupported_scheme" in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) >= 2  # both outputs (the missing input and the ftp row have no frame)
    for src in sources:
        assert not src.startswith(("/", "file:")), src  # relative links only
        assert (page.parent / src).is_file(), src
    for href in re.findall(r'<a href="([^"]+)"', text):
        assert href.startswith("../../videos/") and (page.parent / href).is_file(), href
    summary = state.result() if not state.is_failed() else None
    assert summary is not None and summary["files"]["gallery.html"].endswith("gallery.html")


async def test_gallery_artifact_links_the_page(night: tuple[Path, Any]) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    _, state = night
    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gallery"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        )
    [artifact] = found
    assert "gallery.html" in str(artifact.data) and "2 failed row(s) first" in str(artifact.data)


CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute('data-images', imgs.length + ':' + broken);
});
</script>"""


def chromium(*args: str, cwd: Path) -> str:
    assert CHROMIUM is not None
    profile = cwd / "chromium-profile"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
    ]
    proc = subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make chromium)")
def test_gallery_renders_in_headless_chromium(night: tuple[Path, Any], tmp_path: Path) -> None:
    """Every image of the page loads in a real browser, from the run folder as it lies."""
    out, _ = night
    page = out / "runs/night/gallery.html"
    probe = page.with_name("gallery-check.html")  # beside it: the same relative links
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    try:
        dom = chromium("--dump-dom", probe.as_uri(), cwd=tmp_path)
    finally:
        probe.unlink()
    match = re.search(r'data-images="(\d+):(\d+)"', dom)
    assert match is not None, dom[-2000:]
    images, broken = int(match.group(1)), int(match.group(2))
    assert images == len(re.findall(r"<img ", page.read_text())) and images >= 2
    assert broken == 0
    shot = tmp_path / "gallery.png"
    chromium(f"--screenshot={shot}", "--window-size=900,1100", page.as_uri(), cwd=tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def catalog(out: Path) -> dict[str, dict[str, Any]]:
    table = pq.read_table(io.BytesIO((out / "catalog/latest.parquet").read_bytes()))
    return {r["video_key"]: r for r in table.to_pylist()}


async def test_catalog_after_two_overlapping_then_two_successive_flow_runs(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    gone = str(tmp_path / "late.mp4")

    def params(name: str, rows: list[dict[str, str]]) -> RunParams:
        manifest = write_manifest(tmp_path / f"{name}.csv", rows)
        return RunParams(manifest=str(manifest), output=str(out), run_name=name, gallery=False)

    a = params(
        "a", [{"id": "x", "video_url": str(clips["silent"])}, {"id": "late", "video_url": gone}]
    )
    b = params("b", [{"id": "y", "video_url": str(clips["person"])}])
    await asyncio.gather(remove_backgrounds(a), remove_backgrounds(b))  # overlapping runs
    first = catalog(out)
    assert {k: r["status"] for k, r in first.items()} == {
        "x": "succeeded",
        "late": "failed",
        "y": "succeeded",
    }
    assert first["x"]["run_name"] == "a" and first["y"]["run_name"] == "b"
    assert first["x"]["flow_run_id"] and first["x"]["flow_run_id"] != first["y"]["flow_run_id"]

    shutil.copy(clips["silent"], gone)  # the late video arrives
    await remove_backgrounds(params("c", [{"id": "late", "video_url": gone}]))
    await remove_backgrounds(params("d", [{"video_url": str(clips["composite"])}]))  # no id
    last = catalog(out)
    assert last["late"]["status"] == "succeeded" and last["late"]["run_name"] == "c"
    assert last["x"] == first["x"] and last["y"] == first["y"]  # untouched
    assert last[str(clips["composite"])]["run_name"] == "d"  # keyed by its input URL
    parts = sorted(p.parent.name for p in (out / "catalog/runs").rglob("*.parquet"))
    assert parts == ["a", "b", "c", "d"]
