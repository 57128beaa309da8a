"""The fal runner's expectation of an output (issue 13): pixelcut keeps the input's size and
frame rate, birefnet matches what its result states; corpus outputs with known faults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks.endpoints import endpoint_info
from tasks.ledger.handles import FalFile
from tasks.media.facts import read_video_facts
from tasks.media.formats import OutputFormat
from tasks.media.verify import verify_output
from tests.fakes.outputs import write_output

PIXELCUT = endpoint_info("pixelcut")
BIREFNET = endpoint_info("birefnet")
VIDEO = FalFile(url="https://v3.fal.media/files/x/out.webm")


@pytest.fixture(scope="module")
def probed(clips: dict[str, Path]) -> dict[str, object]:
    return read_video_facts(str(clips["silent"]), scan=True).as_dict()


@pytest.fixture
def silent_webm(clips: dict[str, Path], tmp_path: Path) -> Callable[..., Path]:
    """Writes the silent clip as a transparent VP9 output named ``name``, with ``faults``."""

    def write(name: str, **faults: Any) -> Path:
        webm = OutputFormat.webm_vp9
        return write_output(clips["silent"], tmp_path / name, webm, transparent=True, **faults)

    return write


def pixelcut_expectation(probed: dict[str, object], **options: object):  # type: ignore[no-untyped-def]
    from tasks.fal.expect import fal_expectation

    opts = PIXELCUT.options({"output_format": "webm_vp9", **options})
    return fal_expectation(PIXELCUT, opts, probed, VIDEO)


def test_pixelcut_expects_the_inputs_size_fps_frames_and_colour(
    probed: dict[str, object],
) -> None:
    expected = pixelcut_expectation(probed)
    assert (expected.width, expected.height, expected.fps) == (64, 48, 20.0)
    assert expected.frames == 8 and expected.background_rgb is None
    opaque = pixelcut_expectation(probed, output_format="gif", background="green")
    assert opaque.background_rgb == (0, 255, 0) and not opaque.transparent


def test_half_size_pixelcut_output_is_wrong_size(
    silent_webm: Callable[..., Path], probed: dict[str, object]
) -> None:
    out = silent_webm("half.webm", size=(32, 24))
    report = verify_output(out, pixelcut_expectation(probed))
    assert report.error_code == "wrong_size" and "expected 64x48" in report.error


def test_dropped_frame_fails_frame_count(
    silent_webm: Callable[..., Path], probed: dict[str, object]
) -> None:
    out = silent_webm("short.webm", drop_frame=3)
    assert "frame_count" in verify_output(out, pixelcut_expectation(probed)).codes


def test_wrong_frame_rate_fails(
    silent_webm: Callable[..., Path], probed: dict[str, object]
) -> None:
    out = silent_webm("ok.webm")
    slower = {**probed, "fps": 10.0, "duration_s": 0.8}
    assert "wrong_fps" in verify_output(out, pixelcut_expectation(slower)).codes


def test_correct_pixelcut_output_passes(
    silent_webm: Callable[..., Path], probed: dict[str, object]
) -> None:
    out = silent_webm("ok.webm")
    report = verify_output(out, pixelcut_expectation(probed))
    assert report.ok, report.reasons


def test_birefnet_matches_the_size_fal_states(probed: dict[str, object]) -> None:
    from tasks.fal.expect import fal_expectation

    opts = BIREFNET.options({})
    stated = FalFile(url="u", width=128, height=96, fps=20.0, num_frames=8)
    expected = fal_expectation(BIREFNET, opts, probed, stated)
    assert (expected.width, expected.height, expected.fps) == (128, 96, 20.0)
    unstated = fal_expectation(BIREFNET, opts, probed, VIDEO)
    assert unstated.width is None and unstated.aspect == (64, 48)


def test_no_input_facts_checks_format_only() -> None:
    from tasks.fal.expect import fal_expectation

    expected = fal_expectation(PIXELCUT, PIXELCUT.options({}), None, VIDEO)
    assert expected.width is None and expected.frames is None and expected.fps is None


def test_an_odd_input_may_come_back_one_pixel_even_in_h264_only(
    clips: dict[str, Path],
    tmp_path: Path,
    probed: dict[str, object],
    silent_webm: Callable[..., Path],
) -> None:
    odd = {**probed, "width": 63, "height": 47}
    h264 = pixelcut_expectation(odd, output_format="mp4_h264", background="green")
    vp9 = pixelcut_expectation(odd)
    assert (h264.width, h264.height, h264.size_slack) == (63, 47, 1)
    assert vp9.size_slack == 0  # VP9 keeps odd sizes: 64x48 is a wrong size there

    def mp4(name: str, **faults: Any) -> Path:
        fmt = OutputFormat.mp4_h264
        return write_output(clips["silent"], tmp_path / name, fmt, transparent=False, **faults)

    assert "wrong_size" not in verify_output(mp4("even.mp4"), h264).codes
    assert "wrong_size" in verify_output(mp4("half.mp4", size=(32, 24)), h264).codes
    odd_vp9 = pixelcut_expectation({**odd, "width": 65, "height": 49})
    assert "wrong_size" in verify_output(silent_webm("even.webm"), odd_vp9).codes
