"""Timestamps: frames keep their input times, whatever order the container labels them in."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine.pipeline import remove_background
from tasks.media.facts import read_video_facts
from tasks.media.formats import spec_for
from tasks.media.verify import Expectation, verify_output
from tests.tasks.engine.support import Ellipse

TB = Fraction(1, 1_000_000)  # box.mp4's time base
STEP = 50_000  # 20 fps


def pts_as_dts_clip(path: Path, frames: int = 24) -> Path:
    """An H.264 clip with B-frames whose packets say pts == dts, as box.mp4's do.

    Its decoder hands pictures out in presentation order labelled 0, 100000, 150000, 50000, ...
    """
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = 64, 48, "yuv420p", TB
    enc.framerate = 20
    enc.options = {"preset": "veryfast", "x264-params": "bframes=2:b-adapt=0"}
    packets = []
    for i in range(frames):
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[:, (i * 4) % 56 : (i * 4) % 56 + 8] = 255  # a moving bar: B-frames pay
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * STEP
        packets += enc.encode(frame)
    packets += enc.encode(None)
    with av.open(str(path), "w") as out:
        s = out.add_stream("h264", rate=20)
        s.width, s.height, s.time_base = 64, 48, TB
        s.codec_context.extradata = enc.extradata
        for n, packet in enumerate(packets):
            packet.stream, packet.time_base = s, TB
            packet.pts = packet.dts = n * STEP
            out.mux(packet)
    return path


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def test_the_clip_reproduces_the_disorder(tmp_path: Path) -> None:
    times = decoded_times(pts_as_dts_clip(tmp_path / "in.mp4"))
    assert times != sorted(times)  # what made the muxer answer "returned 22"


@pytest.mark.parametrize("fmt", ["webm_vp9", "mp4_h264", "mov_proresks"])
def test_disordered_labels_come_out_in_order_at_the_input_times(tmp_path: Path, fmt: str) -> None:
    src = pts_as_dts_clip(tmp_path / "in.mp4")
    opts = LocalOptions(output_format=fmt, **({"background": "green"} if fmt == "mp4_h264" else {}))  # type: ignore[arg-type]
    spec = spec_for(opts.resolved_format)
    out = tmp_path / f"out{spec.extension}"
    result = remove_background(src, out, opts, segmenter=Ellipse())
    assert result.frames == 24
    got = decoded_times(out)
    assert got == pytest.approx([i * STEP * float(TB) for i in range(24)], abs=1e-3)
    expected = Expectation.from_input(
        spec, opts.transparent, read_video_facts(src, scan=True), background_rgb=opts.rgb
    )
    report = verify_output(out, expected)
    assert report.ok, report.reasons
