"""Stage one: demux and decode the input, and shrink each frame for the model.

Only this stage blames the input: an FFmpeg error while opening, demuxing or decoding video
becomes an ``InputError`` that names the packet and FFmpeg's reason. Errors anywhere else in the
engine are matteflow's own.

Timestamps: decoders hand frames out in presentation order, but the labels they carry are only
as good as the container's. Phone MP4s without composition offsets (box.mp4: pts == dts) and
AVIs with packed B-frames (Megamind.avi) label frames out of order, which the output muxer then
refuses (``returned 22``). The reader therefore gives the n-th frame out the n-th smallest
timestamp among the packets fed so far: on a sound file that is the frame's own pts, on these it
is the right time for the right picture. Packets whose frame never comes out at the end of the
stream (a trailing B-frame without its reference) get the last picture again, so frame count and
duration stay the input's.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2

from tasks.engine.closing import Closing
from tasks.engine.composite import small_rgb
from tasks.engine.segment import RGBFrame
from tasks.errors import ErrorCode, InputError

log = logging.getLogger("matteflow.engine")

MAX_TAIL_REPEATS = 3  # more frameless packets at the end than this: the file is damaged


@dataclass
class Decoded:
    """One video frame, ready for the matte stage, with the time it is shown at."""

    frame: Any  # av.VideoFrame, yuv420p on the fast path
    small: RGBFrame  # the frame at the segmenter's input size
    rgb: RGBFrame | None  # full-size RGB, only off the fast path
    pts: int | None = None  # in the input stream's time base
    time: float | None = None  # seconds


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


class VideoReader(Closing):
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
        self.time_base: Fraction | None = self.video.time_base
        self.packets = 0  # packets read so far, for naming the one that fails
        self.video_frames = 0
        self.audio_errors = 0  # audio packets dropped as undecodable
        self._times: list[int] = []  # heap: timestamps of video packets not yet shown

    def items(self, size: tuple[int, int], *, fast: bool) -> Iterator[Decoded | Audio]:
        """Decoded frames in order; video frames come with a copy at ``size`` for the model."""
        last: Decoded | None = None
        for packet in self._packets():
            for frame in self._decode(packet):
                if packet.stream is not self.video:
                    yield Audio(frame)
                    continue
                self.video_frames += 1
                last = self._prepare(frame, size, fast)
                yield self._stamped(last, frame.pts)
        yield from self._tail(last)

    def _stamped(self, item: Decoded, own_pts: int | None) -> Decoded:
        pts = heapq.heappop(self._times) if self._times else own_pts
        time = float(pts * self.time_base) if pts is not None and self.time_base else None
        return Decoded(item.frame, item.small, item.rgb, pts, time)

    def _tail(self, last: Decoded | None) -> Iterator[Decoded]:
        """The last picture again for packets at the end whose frame never came out."""
        if last is None or not self._times:
            return
        if len(self._times) > MAX_TAIL_REPEATS:
            first = min(self._times)
            raise InputError(
                f"{len(self._times)} video packets gave no frame (the first at pts {first}); "
                f"{self.video_frames} frames decoded",
                code=ErrorCode.input_undecodable,
            )
        while self._times:
            yield self._stamped(last, None)

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
            if packet.stream is self.video and packet.size:
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None:
                    heapq.heappush(self._times, int(stamp))
            yield packet

    def _decode(self, packet: Any) -> list[Any]:
        try:
            return list(packet.decode())
        except av.error.FFmpegError as exc:
            if packet.stream is not self.video:
                # One bad audio packet (Megamind.avi's first AC-3 frame) costs a few ms of
                # sound, not the video: drop it as FFmpeg's own tools do.
                self.audio_errors += 1
                log.warning("dropped undecodable audio packet %d: %s", self.packets, exc)
                return []
            raise InputError(
                f"could not decode video packet {self.packets} (pts {packet.pts}, after video "
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
