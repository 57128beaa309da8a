"""Every clip of the real corpus through the engine in the three formats users ask for most.

The segmenter is the cheap ``Ellipse``: these tests are about decoding, timestamps, formats and
verification on footage nobody here made (odd time bases, packed B-frames, VFR, a damaged file,
undecodable audio); the models are judged by numbers elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine.pipeline import remove_background
from tasks.media.facts import read_video_facts
from tasks.media.formats import spec_for
from tasks.media.verify import Expectation, verify_output
from tests.footage.conftest import CLIPS
from tests.tasks.engine.support import Ellipse

pytestmark = [pytest.mark.footage, pytest.mark.slow]

FORMATS = {
    "webm_vp9": {},  # transparent
    "mp4_h264": {"background": "custom", "background_color": "20,200,60"},
    "mov_proresks": {},  # transparent, 4:4:4 with alpha
}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("clip", CLIPS)
def test_clip_goes_through_and_keeps_its_timing(
    footage: Path, tmp_path: Path, clip: str, fmt: str
) -> None:
    src = footage / clip
    opts = LocalOptions(output_format=fmt, **FORMATS[fmt])  # type: ignore[arg-type]
    spec = spec_for(opts.resolved_format)
    out = tmp_path / f"out{spec.extension}"
    result = remove_background(src, out, opts, segmenter=Ellipse())
    source = read_video_facts(src, scan=True)
    assert result.frames == source.frames
    expected = Expectation.from_input(spec, opts.transparent, source, background_rgb=opts.rgb)
    report = verify_output(out, expected)
    assert report.ok, report.reasons
    got = [round(t, 3) for t in frame_times(out)]
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got == pytest.approx(packet_times(src), abs=1.5e-3)  # every frame at its input time


def frame_times(path: Path) -> list[float]:
    """The output's frame times, from its first."""
    with av.open(str(path)) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    return [t - times[0] for t in times]


def packet_times(path: Path) -> list[float]:
    """The input's video packet times in presentation order, from its first."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.size and p.pts is not None)
        return [round(float((t - pts[0]) * s.time_base), 3) for t in pts]
