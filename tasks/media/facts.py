"""What is in an input video: one type (``VideoFacts``) and one reader (``read_video_facts``).

Preflight, the local runner, the fal runner and the estimate all read inputs through here, so a
failure has one code wherever it happens: ``input_no_video`` for a file without a video stream,
``input_undecodable`` for bytes that are not a video, ``input_unreadable`` when the bytes cannot
be had at all (an HTTP error, a refused connection, a missing file).

The header alone (no decoding) prices and limits a job: PyAV opens local files and http(s) URLs
(presigned S3 URLs too) and reads only what it needs, so a remote input costs a few range
requests. ``scan=True`` then demuxes the whole stream in the same open: counting packets gives
the exact frame count (ten times cheaper than decoding), and the first frame its rotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tasks.errors import ErrorCode, InputError
from tasks.media.inputs import local_path
from tasks.storage.store import redact_url


@dataclass(frozen=True)
class VideoFacts:
    """An input's frames, size and timing; ``frames_exact`` when counted or stated, not guessed."""

    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    frames_exact: bool = True
    bytes: int | None = None
    has_audio: bool = False
    video_streams: int = 1
    codec: str = ""
    rotation: int = 0
    variable_frame_rate: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def frames_at_most(self) -> int:
        """The frame count limits are checked against: an estimate is rounded up."""
        return self.frames if self.frames_exact else math.ceil(self.duration_s * self.fps)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["notes"] = list(self.notes)
        return values


Check = Callable[[VideoFacts], None]


def stream_timing(container: Any, stream: Any) -> tuple[float, float, int | None]:
    """(fps, duration in s, frame count if the container states it) from headers alone."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(0)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    return float(rate), duration, int(stream.frames) if stream.frames else None


def shown_name(location: str) -> str:
    """How an input is named in messages: a local file by its name, a URL without secrets."""
    path = local_path(location)
    return path.name if path is not None else redact_url(location)


def read_video_facts(
    location: str | Path,
    *,
    scan: bool = False,
    check: Check | None = None,
    timeout_s: float = 30.0,
    vfr_jitter: float = 0.1,
) -> VideoFacts:
    """Open ``location`` once and say what it holds; raises ``InputError`` when it is no video.

    ``check`` sees the header's facts before anything is demuxed (limits refuse a huge input
    cheaply); ``scan`` then counts the packets and reads the first frame's rotation. A frame rate
    is variable when a frame's duration differs from the median by more than ``vfr_jitter``.
    """
    where = str(location)
    shown = shown_name(where)
    try:
        with av.open(where, timeout=timeout_s) as container:
            facts = header_facts(container, where, shown)
            if check is not None:
                check(facts)
            return scan_packets(container, facts, vfr_jitter) if scan else facts
    except (av.error.FFmpegError, OSError) as exc:
        raise unreadable(exc, where, shown) from exc


def unreadable(exc: Exception, where: str, shown: str) -> InputError:
    """The one translation of a failed read: bytes that are no video, or bytes not to be had."""
    detail = f"{type(exc).__name__}: {str(exc).replace(where, shown)[:200]}"
    if isinstance(exc, ValueError):  # PyAV's InvalidDataError and its kin
        return InputError(
            f"input {shown} is not a readable video: {detail}", code=ErrorCode.input_undecodable
        )
    return InputError(f"input {shown} cannot be read: {detail}", code=ErrorCode.input_unreadable)


def header_facts(container: Any, where: str, shown: str) -> VideoFacts:
    """Facts from the container's headers alone; the frame count may be an estimate."""
    videos = container.streams.video
    if not videos:
        kinds = sorted({str(s.type) for s in container.streams}) or ["no streams"]
        raise InputError(
            f"input {shown} has no video stream ({', '.join(kinds)} only)",
            code=ErrorCode.input_no_video,
        )
    stream = videos[0]
    fps, duration, counted = stream_timing(container, stream)
    path = local_path(where)
    if path is not None:
        size: int | None = path.stat().st_size
    else:
        size = container.size if isinstance(getattr(container, "size", None), int) else None
    notes = (f"{len(videos)} video streams: the first is processed",) if len(videos) > 1 else ()
    return VideoFacts(
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=round(fps, 3),
        frames=counted if counted is not None else round(duration * fps),
        duration_s=round(duration, 3),
        frames_exact=counted is not None,
        bytes=size,
        has_audio=bool(container.streams.audio),
        video_streams=len(videos),
        codec=str(stream.codec_context.name),
        notes=notes,
    )


def scan_packets(container: Any, facts: VideoFacts, vfr_jitter: float) -> VideoFacts:
    """Count the first video stream's packets, read their timestamps and the first frame's
    rotation (phone videos), all in one pass over the open container."""
    stream = container.streams.video[0]
    pts: list[int] = []
    count, rotation = 0, None
    for packet in container.demux(stream):
        if rotation is None:
            for frame in stream.decode(packet):
                rotation = int(frame.rotation or 0) % 360
                break
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        count += 1
        if packet.pts is not None:
            pts.append(int(packet.pts))
    fps = float(stream.average_rate or stream.guessed_rate or Fraction(0))
    vfr, duration = packet_timing(pts, float(stream.time_base or 0), vfr_jitter)
    if duration is None:
        duration = count / fps if fps else 0.0
    return replace(
        facts,
        frames=count,
        frames_exact=True,
        duration_s=round(duration, 3),
        variable_frame_rate=vfr,
        rotation=rotation or 0,
    )


def packet_timing(pts: list[int], time_base: float, jitter: float) -> tuple[bool, float | None]:
    """(variable frame rate?, duration in s) from packet timestamps; None when they say nothing."""
    if len(pts) < 2 or not time_base:
        return False, None
    ordered = np.sort(np.asarray(pts, dtype=np.int64))
    deltas = np.diff(ordered)
    median = float(np.median(deltas))
    if median <= 0:
        return False, None
    vfr = bool(np.abs(deltas - median).max() > jitter * median)
    return vfr, float(ordered[-1] - ordered[0] + median) * time_base
