"""Every background and output format of the local engine, on a tiny clip."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tasks.endpoints.options import Background, RemovalOptions
from tasks.engine.pipeline import remove_background
from tasks.errors import InputError
from tasks.media.formats import FORMATS, OutputFormat
from tasks.media.verify import probe
from tests.tasks.engine.support import verify_like

ALPHA_FORMATS = [f for f, spec in FORMATS.items() if spec.carries_alpha]


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_keeps_frames_size_rate_and_audio(
    clips: dict[str, Path], tmp_path: Path, fmt: OutputFormat
) -> None:
    spec = FORMATS[fmt]
    background = "transparent" if spec.carries_alpha else "green"
    options = RemovalOptions(background=background, output_format=fmt)
    out = tmp_path / f"out{spec.extension}"
    result = remove_background(clips["person"], out, options)
    src = probe(clips["person"])
    found = probe(out)
    assert found.frames == src.frames == result.frames
    assert (found.width, found.height) == (src.width, src.height)
    assert found.fps == pytest.approx(src.fps, rel=0.02)
    assert found.has_alpha is spec.carries_alpha
    assert found.has_audio is (spec.audio_codec is not None)
    report = verify_like(out, spec, options.transparent, src)
    assert report.ok, report.reasons


@pytest.mark.parametrize("background", [b for b in Background if b is not Background.transparent])
def test_every_solid_background_is_opaque_and_coloured(
    clips: dict[str, Path], tmp_path: Path, background: Background
) -> None:
    colour = "10,20,250" if background is Background.custom else None
    options = RemovalOptions(
        background=background, background_color=colour, output_format="mkv_vp9"
    )
    out = tmp_path / "out.mkv"
    remove_background(clips["composite"], out, options)
    assert not probe(out).has_alpha
    # The composite's top-left corner is background for its whole length: it takes the colour.
    with av.open(str(out)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    corner = first[:6, :6].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - np.array(options.rgb)).max() < 40


def test_transparent_webm_alpha_follows_the_subject(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.webm"
    remove_background(clips["composite"], out, RemovalOptions())
    found = probe(out)
    assert found.has_alpha and found.alpha_mean is not None
    assert 0.05 < found.alpha_mean < 0.95  # neither erased nor untouched


def test_not_a_video_is_an_input_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"definitely not a video" * 100)
    with pytest.raises(InputError) as info:
        remove_background(bogus, tmp_path / "out.webm", RemovalOptions())
    assert info.value.code == "input_undecodable"


def test_silent_input_gives_silent_output(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.webm"
    result = remove_background(clips["silent"], out, RemovalOptions())
    assert not result.has_audio and not probe(out).has_audio
    assert _count_frames(out) == result.frames
