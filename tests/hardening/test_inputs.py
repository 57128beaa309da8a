"""Bad and awkward inputs on the local engine: each ends its row with a clear status and reason,
refused inputs cost no processing, and awkward ones (rotation, VFR, odd sizes) come out right."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import av
import pytest

from tasks.endpoints import endpoint_info
from tasks.engine.job import run_local_job
from tasks.ledger.jobs import Job, JobState, Ledger, job_key
from tasks.manifest.plan import resolve_params
from tasks.media.preflight import InputSettings, check_remote
from tasks.media.verify import probe
from tasks.storage.store import Storage
from tests.fakes import bad_inputs
from tests.fakes.http_files import HttpFiles
from tests.hardening.conftest import EllipseSegmenter

LOCAL = endpoint_info("local")


class CountingSegmenter(EllipseSegmenter):
    frames = 0

    def __call__(self, rgb: Any) -> Any:
        CountingSegmenter.frames += 1
        return super().__call__(rgb)


def make_job(url: str, row_id: str = "clip", **options: Any) -> Job:
    params = resolve_params(LOCAL, {}, options)
    key = job_key(url, "local", params)
    return Job(key=key, row=1, id=row_id, video_url=url, endpoint="local", params=params)


def run(job: Job, out: Path, limits: InputSettings | None = None) -> dict[str, Any]:
    CountingSegmenter.frames = 0
    return run_local_job(job, Storage(str(out)), segmenter_factory=CountingSegmenter, limits=limits)


def assert_refused(row: dict[str, Any], out: Path, code: str, says: str) -> None:
    """Failed with the reason, nothing processed, nothing stored, ledger says failed."""
    assert (row["status"], row["error_code"]) == ("failed", code), row["error"]
    assert says in row["error"], row["error"]
    assert CountingSegmenter.frames == 0
    assert not (out / "videos").exists() or not any((out / "videos").iterdir())
    entry = Ledger(Storage(str(out))).get(row["job_key"])
    assert entry is not None and entry.state is JobState.failed and entry.error_code == code


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-inputs")
    (d / "zero.mp4").write_bytes(b"")
    (d / "page.mp4").write_bytes(bad_inputs.HTML_PAGE)
    return {
        "zero": d / "zero.mp4",
        "html": d / "page.mp4",
        "noise": bad_inputs.not_a_video(d / "noise.mp4"),
        "audio": bad_inputs.audio_only(d / "audio.m4a"),
        "odd": bad_inputs.clip(
            d / "odd.mkv", width=63, height=47, codec="libx264rgb", pix_fmt="rgb24"
        ),
        "rotated": bad_inputs.clip(d / "rotated.mp4", rotation=90),
        "vfr": bad_inputs.clip(d / "vfr.mkv", pts=[0, 100, 150, 400, 420, 700]),
        "two": bad_inputs.clip(d / "two.mkv", extra_video_streams=1),
        "good": bad_inputs.clip(d / "good.mp4"),
    }


@pytest.mark.parametrize(
    ("name", "code", "says"),
    [
        ("zero", "input_empty", "0 bytes"),
        ("html", "input_html", "HTML page"),
        ("noise", "input_undecodable", "not a readable video"),
        ("audio", "input_no_video", "audio only"),
    ],
)
def test_local_file_that_is_not_a_usable_video(
    bad: dict[str, Path], tmp_path: Path, name: str, code: str, says: str, tally: Counter[str]
) -> None:
    row = run(make_job(str(bad[name])), tmp_path / "out")
    tally["inputs_tried"] += 1
    assert_refused(row, tmp_path / "out", code, says)


@pytest.mark.parametrize(
    ("route", "code", "says"),
    [
        ({"status": 404, "body": b"nope", "content_type": "text/plain"}, "input_not_found", "404"),
        (
            {"status": 403, "body": b"denied", "content_type": "text/plain"},
            "input_forbidden",
            "403",
        ),
        ({"status": 500, "body": b"oops", "content_type": "text/plain"}, "input_http_error", "500"),
        ({"body": bad_inputs.HTML_PAGE, "content_type": "text/html"}, "input_html", "web page"),
        ({"body": bad_inputs.HTML_PAGE, "content_type": "video/mp4"}, "input_html", "HTML page"),
        ({"body": b"", "content_type": "video/mp4"}, "input_empty", "0 bytes"),
    ],
)
def test_http_input_that_is_not_a_video(
    http_files: HttpFiles,
    tmp_path: Path,
    route: dict[str, Any],
    code: str,
    says: str,
    tally: Counter[str],
) -> None:
    body = route.pop("body")
    url = http_files.serve(body, "v/clip.mp4", **route) + "?X-Amz-Signature=abc123"
    row = run(make_job(url), tmp_path / "out")
    tally["inputs_tried"] += 1
    assert_refused(row, tmp_path / "out", code, says)
    assert "abc123" not in row["error"] and "abc123" not in row["video_url"]


@pytest.mark.parametrize(
    ("limit", "value", "code"),
    [
        ("max_bytes", 100, "input_too_large"),
        ("max_duration_s", 0.2, "input_too_long"),
        ("max_pixels", 64 * 47, "input_too_many_pixels"),
        ("max_frames", 5, "input_too_many_frames"),
    ],
)
def test_inputs_over_a_limit_are_refused_before_processing(
    bad: dict[str, Path],
    http_files: HttpFiles,
    tmp_path: Path,
    limit: str,
    value: float,
    code: str,
    tally: Counter[str],
) -> None:
    limits = InputSettings(**{limit: value})
    for n, url in enumerate([str(bad["good"]), http_files.serve(bad["good"], "good.mp4")]):
        out = tmp_path / f"out{n}"
        row = run(make_job(url), out, limits)
        tally["inputs_tried"] += 1
        assert_refused(row, out, code, f"MATTEFLOW_INPUT_{limit.upper()}")


def test_an_oversized_download_without_a_length_stops_at_the_limit(
    bad: dict[str, Path], http_files: HttpFiles, tmp_path: Path, tally: Counter[str]
) -> None:
    """A server that does not declare a length is cut off as soon as the limit is passed."""
    url = http_files.serve(bad["good"], "big.mp4", chunked=True)
    assert check_remote(url, InputSettings(max_bytes=10)) is None  # nothing to judge by
    size = bad["good"].stat().st_size
    row = run(make_job(url), tmp_path / "out", InputSettings(max_bytes=size // 2))
    tally["inputs_tried"] += 1
    assert_refused(row, tmp_path / "out", "input_too_large", "MATTEFLOW_INPUT_MAX_BYTES")
    ok = run(make_job(url), tmp_path / "ok")
    assert ok["status"] == "succeeded", ok["error"]


def test_presigned_style_links_that_refuse_head_are_checked_with_a_ranged_get(
    bad: dict[str, Path], http_files: HttpFiles
) -> None:
    url = http_files.serve(bad["good"], "signed.mp4", head_status=403)
    assert check_remote(url, InputSettings()) == bad["good"].stat().st_size
    assert http_files.requests[("GET", "signed.mp4")] == 1


def output_of(row: dict[str, Any]) -> Path:
    assert row["status"] == "succeeded", row["error"]
    return Path(row["output_url"])


@pytest.mark.parametrize(
    ("fmt", "size", "alpha"),
    [
        ("mov_proresks", (63, 47), True),
        ("webm_vp9", (63, 47), True),  # VP9 keeps odd sizes in 4:2:0
        ("mp4_h264", (64, 48), False),  # H.264 cannot: the edge is repeated
    ],
)
def test_odd_sizes_go_through_every_format(
    bad: dict[str, Path], tmp_path: Path, fmt: str, size: tuple[int, int], alpha: bool
) -> None:
    colour = {} if alpha else {"background": "green"}
    row = run(make_job(str(bad["odd"]), output_format=fmt, **colour), tmp_path / "out")
    out = output_of(row)
    found = probe(out)
    assert (found.width, found.height, found.frames, found.has_alpha) == (*size, 6, alpha)
    if fmt == "mp4_h264":  # the added column and row repeat their neighbours
        with av.open(str(out)) as c:
            rgb = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        assert abs(rgb[:, 63] - rgb[:, 62]).mean() < 8 and abs(rgb[47] - rgb[46]).mean() < 8


def test_a_rotated_phone_video_keeps_its_rotation(bad: dict[str, Path], tmp_path: Path) -> None:
    row = run(make_job(str(bad["rotated"])), tmp_path / "out")
    out = output_of(row)
    with av.open(str(out)) as c:
        first = next(c.decode(video=0))
        assert first.rotation == 90
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
    found = probe(out)
    assert found.has_alpha and found.frames == 6
    entry = Ledger(Storage(str(tmp_path / "out"))).get(row["job_key"])
    assert entry is not None and entry.metrics["input"]["rotation"] == 90


def test_variable_frame_rate_keeps_every_frame_and_its_timestamp(
    bad: dict[str, Path], tmp_path: Path
) -> None:
    row = run(make_job(str(bad["vfr"]), output_format="mkv_vp9"), tmp_path / "out")
    with av.open(str(bad["vfr"])) as c:
        times_in = [round(float(f.time), 3) for f in c.decode(video=0)]
    with av.open(str(output_of(row))) as c:
        times_out = [
            round(float(p.pts * p.time_base), 3) for p in c.demux(video=0) if p.pts is not None
        ]
    assert sorted(times_out) == times_in == [0.0, 0.1, 0.15, 0.4, 0.42, 0.7]


def test_several_video_streams_process_the_first(bad: dict[str, Path], tmp_path: Path) -> None:
    row = run(make_job(str(bad["two"])), tmp_path / "out")
    found = probe(output_of(row))
    assert (found.width, found.height, found.frames) == (64, 48, 6)
    entry = Ledger(Storage(str(tmp_path / "out"))).get(row["job_key"])
    assert entry is not None and entry.metrics["input"]["video_streams"] == 2
