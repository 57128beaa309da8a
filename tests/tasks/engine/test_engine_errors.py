"""Who gets the blame: decode failures name the input's packet, anything else is a bug."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine.pipeline import remove_background
from tasks.engine.reader import VideoReader
from tasks.errors import ErrorCode, InputError, MatteflowError
from tests.tasks.engine.support import Ellipse


def png_clip_with_a_bad_packet(path: Path, frames: int = 6, bad: int = 3) -> Path:
    """An AVI of PNG frames whose packet ``bad`` (0-based) is garbage: PNG refuses it."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("png", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "rgb24"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 30, np.uint8), format="rgb24")
            f.pts = i
            for packet in s.encode(f):
                if i == bad:
                    junk = av.Packet(b"not a png" * 20)
                    junk.stream, junk.pts, junk.dts = s, packet.pts, packet.dts
                    junk.time_base = packet.time_base
                    packet = junk
                out.mux(packet)
        out.mux(s.encode(None))
    return path


def test_a_bad_packet_is_an_input_error_naming_it(tmp_path: Path) -> None:
    src = png_clip_with_a_bad_packet(tmp_path / "bad.avi")
    with pytest.raises(InputError) as err:
        remove_background(src, tmp_path / "o.webm", LocalOptions(), segmenter=Ellipse())
    assert err.value.code == ErrorCode.input_undecodable
    assert "video packet 4 (pts 3, after video frame 3)" in err.value.message
    assert "Invalid data" in err.value.message  # FFmpeg's reason, kept


def test_reader_yields_frames_up_to_the_bad_packet(tmp_path: Path) -> None:
    src = png_clip_with_a_bad_packet(tmp_path / "bad.avi", bad=4)
    got = []
    with VideoReader(src, audio=False) as reader, pytest.raises(InputError):
        for item in reader.items((32, 32), fast=True):
            got.append(item.frame.pts)
    assert got == [0, 1, 2, 3]


class Buggy(Ellipse):
    """A segmenter with a programming error on its third frame."""

    calls = 0

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.calls == 3:
            raise ValueError("operands could not be broadcast together")
        return super().__call__(rgb)


def test_a_bug_is_an_internal_error_with_the_traceback_in_the_log(
    clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="matteflow.engine"),
        pytest.raises(MatteflowError) as err,
    ):
        remove_background(clips["person"], tmp_path / "o.webm", LocalOptions(), segmenter=Buggy())
    assert not isinstance(err.value, InputError)  # the input is not to blame
    assert err.value.code == ErrorCode.internal_error
    assert "ValueError: operands could not be broadcast" in err.value.message
    assert isinstance(err.value.__cause__, ValueError)
    (record,) = [r for r in caplog.records if r.name == "matteflow.engine"]
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "Buggy" in caplog.text or "__call__" in caplog.text  # the traceback itself


def test_an_encoder_failure_is_not_blamed_on_the_input(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.engine import writer

    def refuse(self: writer.VideoWriter) -> None:
        raise av.error.ValueError(22, "Invalid argument")  # what a muxer says about bad pts

    monkeypatch.setattr(writer.VideoWriter, "flush", refuse)
    with pytest.raises(MatteflowError) as err:
        remove_background(clips["silent"], tmp_path / "o.webm", LocalOptions(), segmenter=Ellipse())
    assert err.value.code == ErrorCode.internal_error
