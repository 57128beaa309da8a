"""Stage one: demux and decode the input, and shrink each frame for the model.

Only this stage blames the input: an FFmpeg error while opening, demuxing or decoding becomes an
``InputError`` that names the packet (or frame) and FFmpeg's reason. Errors anywhere else in the
engine are matteflow's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2

from tasks.engine.composite import small_rgb
from tasks.engine.segment import RGBFrame
from tasks.errors import ErrorCode, InputError


@dataclass
class Decoded:
    """One video frame, ready for the matte stage."""

    frame: Any  # av.VideoFrame, yuv420p on the fast path
    small: RGBFrame  # the frame at the segmenter's input size
    rgb: RGBFrame | None  # full-size RGB, only off the fast path


@dataclass
class Audio:
    """One decoded audio frame, passed through to the encoder untouched."""

    frame: Any


def open_input(src: Path) -> Any:
    """The input container, with at least one video stream."""
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(
            f"input is not a readable video: {exc}", code=ErrorCode.input_undecodable
        ) from exc
    if not container.streams.video:
        container.close()
        raise InputError("input has no video stream", code=ErrorCode.input_no_video)
    return container


class VideoReader:
    """The input's first video stream (and first audio stream, when asked), frame by frame."""

    def __init__(self, src: Path, *, audio: bool) -> None:
        self.container = open_input(src)
        self.video = self.container.streams.video[0]
        # Slice threads only: frame threading delays frames and drops a bad packet's frame
        # without an error, so the packet that broke could not be named. Decoding is the
        # cheapest stage (1-4 ms a frame at 640x480 on one core, the corpus in FACTS.md).
        self.video.thread_type = "SLICE"
        streams = self.container.streams
        self.audio = streams.audio[0] if audio and streams.audio else None
        ctx = self.video.codec_context
        self.width, self.height = ctx.width, ctx.height
        self.rate: Fraction = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.packets = 0  # packets read so far, for naming the one that fails
        self.video_frames = 0

    def items(self, size: tuple[int, int], *, fast: bool) -> Iterator[Decoded | Audio]:
        """Decoded frames in order; video frames come with a copy at ``size`` for the model."""
        for packet in self._packets():
            for frame in self._decode(packet):
                if packet.stream is not self.video:
                    yield Audio(frame)
                    continue
                self.video_frames += 1
                yield self._prepare(frame, size, fast)

    def _packets(self) -> Iterator[Any]:
        streams = [s for s in (self.video, self.audio) if s is not None]
        demux = self.container.demux(streams)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                raise InputError(
                    f"could not read packet {self.packets + 1} (after video frame "
                    f"{self.video_frames}): {exc}",
                    code=ErrorCode.input_undecodable,
                ) from exc
            self.packets += 1
            yield packet

    def _decode(self, packet: Any) -> list[Any]:
        try:
            return list(packet.decode())
        except av.error.FFmpegError as exc:
            kind = "video" if packet.stream is self.video else "audio"
            raise InputError(
                f"could not decode {kind} packet {self.packets} (pts {packet.pts}, after video "
                f"frame {self.video_frames}): {exc}",
                code=ErrorCode.input_undecodable,
            ) from exc

    def _prepare(self, frame: Any, size: tuple[int, int], fast: bool) -> Decoded:
        full = (self.width, self.height)
        if fast:
            if frame.format.name != "yuv420p":  # to limited-range 4:2:0
                frame = frame.reformat(format="yuv420p", dst_color_range=1)
            small = frame.to_ndarray(format="rgb24") if size == full else small_rgb(frame, size)
            return Decoded(frame, small, None)
        rgb = frame.to_ndarray(format="rgb24")
        small = rgb if size == full else cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        return Decoded(frame, small, rgb)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
