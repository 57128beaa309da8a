"""Read what a video file really holds: container, codec, frames, timing, alpha and matte stats.

Outputs are decoded in full (a file that does not decode to the end is broken); inputs are read by
``tasks.media.facts``.
VP9 alpha is only visible through the ``libvpx-vp9`` decoder: FFmpeg's native vp9 decoder
silently drops it, so VP9 streams are decoded with ``libvpx-vp9`` here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

ALPHA_PIX_FMTS = ("yuva", "gbrap", "rgba", "bgra", "argb", "abgr", "ya8", "ya16")
# Demuxers that read a single still image: such a file is "not a video" even if it opens.
IMAGE_DEMUXERS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")
MATTE_SIDE = 256  # matte statistics are computed on frames scaled to at most this long side

Alpha = npt.NDArray[np.float32]


class NoVideoStream(ValueError):
    """The file opens but holds no video stream (audio only, or a single still image)."""


def pix_fmt_has_alpha(name: str) -> bool:
    return name.startswith(ALPHA_PIX_FMTS)


def decoder_for(stream: Any) -> Any:
    """The stream's decoder; VP9 goes through libvpx-vp9 so that alpha survives."""
    if stream.codec_context.name == "vp9":
        ctx = av.CodecContext.create("libvpx-vp9", "r")
        if stream.codec_context.extradata:
            ctx.extradata = stream.codec_context.extradata
        return ctx
    stream.thread_type = "AUTO"  # frame threads: ProRes 4444 decodes several times faster
    return stream.codec_context


def _mp4_kind(head: bytes) -> str:
    brand = head[8:12]
    return "mov" if brand == b"qt  " else "mp4"


def sniff_container(path: Path) -> str | None:
    """The container a file's first bytes declare: webm, matroska, mp4, mov, gif, or None."""
    with path.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "webm" if b"\x42\x82\x84webm" in head else "matroska"
    if head[4:8] == b"ftyp":
        return _mp4_kind(head)
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"  # old QuickTime files may start without ftyp
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None


def truncation(path: Path, kind: str | None) -> str | None:
    """Why the file's own structure says it ends early, or None when it looks complete."""
    size = path.stat().st_size
    if kind in ("mp4", "mov"):
        return _iso_box_overrun(path, size)
    if kind in ("webm", "matroska"):
        return _ebml_segment_overrun(path, size)
    if kind == "gif":
        with path.open("rb") as fh:
            fh.seek(max(0, size - 1))
            if fh.read(1) != b";":
                return "GIF trailer byte missing: the file ends mid-stream"
    return None


def _iso_box_overrun(path: Path, size: int) -> str | None:
    """Walk the top-level MP4/MOV boxes; a box reaching past the end means a cut file."""
    pos, seen = 0, set()
    with path.open("rb") as fh:
        while pos + 8 <= size:
            fh.seek(pos)
            header = fh.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) >= 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:
                box_size = size - pos  # extends to the end of the file by definition
            if box_size < 8:
                return f"invalid box size {box_size} at byte {pos}"
            if pos + box_size > size:
                name = box_type.decode("latin-1")
                return f"box '{name}' needs {pos + box_size} bytes, file has {size}"
            seen.add(box_type)
            pos += box_size
    if b"moov" not in seen:
        return "no 'moov' box: the file was cut before its index was written"
    return None


def _ebml_vint(data: bytes, pos: int) -> tuple[int, int, bool]:
    """(value, length, unknown) of the EBML variable-length integer at ``pos``."""
    first = data[pos]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or pos + length > len(data):
        raise ValueError("bad EBML size")
    value = first & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length, value == (1 << (7 * length)) - 1


def _ebml_segment_overrun(path: Path, size: int) -> str | None:
    """A Matroska/WebM Segment that declares more bytes than the file has: a cut file.

    Muxers writing to a seekable file fill in the Segment's size at the end; a live-written
    file says "unknown", which tells nothing.
    """
    with path.open("rb") as fh:
        head = fh.read(4096)
    try:
        header_len, n, _ = _ebml_vint(head, 4)  # after the 4-byte EBML header ID
        pos = 4 + n + header_len
        if head[pos : pos + 4] != b"\x18\x53\x80\x67":  # Segment
            return None
        seg_len, n, unknown = _ebml_vint(head, pos + 4)
    except (ValueError, IndexError):
        return None
    end = pos + 4 + n + seg_len
    if not unknown and end > size:
        return f"Segment needs {end} bytes, file has {size}"
    return None


@dataclass
class MatteStats:
    """Foreground fraction and flicker, accumulated over the frames a probe looks at."""

    every: int = 1
    fg: list[float] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)
    _prev: Alpha | None = None
    _prev_index: int = -2

    def add(self, index: int, alpha: Alpha) -> None:
        if index % self.every == 0:
            self.fg.append(float((alpha >= 0.5).mean()))
        if (
            self._prev is not None
            and index == self._prev_index + 1
            and index % self.every == 1 % self.every
        ):
            self.changes.append(float(np.abs(alpha - self._prev).mean()))
        self._prev, self._prev_index = alpha, index

    def wants(self, index: int) -> bool:
        """Frames ``k*every`` and the one after it: fg fraction on the first, flicker on the pair."""
        return index % self.every in (0, 1 % self.every)

    @property
    def fg_fraction(self) -> float | None:
        return round(float(np.mean(self.fg)), 4) if self.fg else None

    @property
    def fg_range(self) -> tuple[float, float] | None:
        return (round(min(self.fg), 4), round(max(self.fg), 4)) if self.fg else None

    @property
    def flicker(self) -> float | None:
        return round(float(np.mean(self.changes)), 5) if self.changes else None


def small_size(width: int, height: int, side: int = MATTE_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def alpha_of(frame: Any, size: tuple[int, int] | None = None) -> Alpha | None:
    """A frame's alpha channel in [0, 1] at reduced size, or None when its format has none."""
    if not pix_fmt_has_alpha(frame.format.name):
        return None
    width, height = size or small_size(frame.width, frame.height)
    rgba = frame.reformat(width=width, height=height, format="rgba", interpolation="AREA")
    return np.asarray(rgba.to_ndarray()[..., 3], dtype=np.float32) / 255.0


def colour_matte(
    frame: Any,
    background_rgb: tuple[int, int, int],
    tolerance: int,
    size: tuple[int, int] | None = None,
) -> Alpha:
    """The matte of a frame composited over a solid colour: 1 where a pixel is not that colour."""
    width, height = size or small_size(frame.width, frame.height)
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
    pixels = np.asarray(rgb.to_ndarray(), dtype=np.int16)
    dist = np.abs(pixels - np.asarray(background_rgb, np.int16)).max(axis=-1)
    return np.asarray(dist > tolerance, dtype=np.float32)


def frame_alpha(
    frame: Any,
    background_rgb: tuple[int, int, int] | None,
    tolerance: int,
    size: tuple[int, int] | None = None,
) -> Alpha | None:
    """A frame's matte: its distance from the solid background when one is given, else its
    alpha; None for an opaque frame with no known background."""
    if background_rgb is not None:
        return colour_matte(frame, background_rgb, tolerance, size)
    return alpha_of(frame, size)


def mask_alpha(frame: Any, size: tuple[int, int] | None = None) -> Alpha:
    """A mask video frame as a matte: its alpha if it has one, else its luma in [0, 1].

    swscale expands limited-range (16-235) video to full-range grey, so white reads as 1.
    """
    alpha = alpha_of(frame, size)
    if alpha is not None:
        return alpha
    width, height = size or small_size(frame.width, frame.height)
    gray = frame.reformat(width=width, height=height, format="gray", interpolation="AREA")
    return np.asarray(gray.to_ndarray(), dtype=np.float32) / 255.0


def declared_video_duration(stream: Any) -> float | None:
    """The video stream's own duration from the container header (Matroska writes it as a tag).

    The container's overall duration is not used: an audio track may outlast the video.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


@dataclass
class VideoProbe:
    """What a video file really holds, read by decoding it."""

    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    has_alpha: bool
    has_audio: bool
    alpha_mean: float | None = None  # mean alpha of sampled frames, 0..1
    demuxer: str = ""
    declared_duration_s: float | None = None  # what the container header claims for the video
    fg_fraction: float | None = None  # share of pixels with alpha >= 0.5, mean over samples
    fg_min: float | None = None
    fg_max: float | None = None
    flicker: float | None = None  # mean |alpha(t) - alpha(t-1)| over sampled pairs
    decode_error: str | None = None  # decoding stopped with this error after ``frames``
    alpha_mode: bool = False  # VP9: the container flags an alpha side channel


@dataclass
class DecodeTally:
    """What decoding a stream's frames found: count, timestamps, pixel format, alpha samples."""

    stats: MatteStats
    pix_fmt: str
    frames: int = 0
    first_time: float | None = None
    last_time: float = 0.0
    alpha_seen: bool = False
    alpha_means: list[float] = field(default_factory=list)
    error: str | None = None

    def add(self, frame: Any, background_rgb: tuple[int, int, int] | None, tolerance: int) -> None:
        self.pix_fmt = frame.format.name
        if frame.time is not None:
            t = float(frame.time)
            self.first_time = t if self.first_time is None else min(self.first_time, t)
            self.last_time = max(self.last_time, t)
        if self.stats.wants(self.frames):
            alpha = alpha_of(frame)
            if alpha is not None:
                self.alpha_means.append(float(alpha.mean()))
                self.alpha_seen = self.alpha_seen or bool((alpha < 1.0).any())
            matte = alpha
            if background_rgb is not None:
                matte = colour_matte(frame, background_rgb, tolerance)
            if matte is not None:
                self.stats.add(self.frames, matte)
        self.frames += 1

    def duration_s(self, fps: float) -> float:
        """First to last frame time, plus one frame."""
        one_frame = 1.0 / fps if fps and self.frames else 0.0
        return round(self.last_time - (self.first_time or 0.0) + one_frame, 3)


def decode_all(
    container: Any,
    stream: Any,
    sample_every: int,
    background_rgb: tuple[int, int, int] | None,
    tolerance: int,
) -> DecodeTally:
    """Decode every frame of ``stream``; an error part-way is kept in the tally, not raised."""
    decoder = decoder_for(stream)
    tally = DecodeTally(MatteStats(every=max(1, sample_every)), stream.codec_context.pix_fmt or "")
    try:
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                tally.add(frame, background_rgb, tolerance)
    except av.error.FFmpegError as exc:
        tally.error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    return tally


def probe(
    path: Path,
    *,
    sample_every: int = 1,
    background_rgb: tuple[int, int, int] | None = None,
    background_tolerance: int = 40,
) -> VideoProbe:
    """Decode every frame of the first video stream and measure its matte on sampled frames.

    Raises ``av.error.FFmpegError`` if the file does not open and ``NoVideoStream`` if it holds
    no video stream; an error part-way through decoding is recorded in ``decode_error`` instead.
    """
    with open_video(path) as (container, stream, kind):
        tally = decode_all(container, stream, sample_every, background_rgb, background_tolerance)
        return video_probe(container, stream, tally, kind)


@contextmanager
def open_video(path: Path) -> Iterator[tuple[Any, Any, str]]:
    """The open container, its first video stream and the container kind (sniffed, else the
    demuxer's name); ``NoVideoStream`` for a file without one (an image is not a video)."""
    kind = sniff_container(path)
    with av.open(str(path)) as container:
        demuxer = container.format.name
        if not container.streams.video or demuxer in IMAGE_DEMUXERS:
            raise NoVideoStream(f"no video stream (read as {demuxer})")
        yield container, container.streams.video[0], kind or demuxer


def video_probe(container: Any, stream: Any, tally: DecodeTally, kind: str) -> VideoProbe:
    """The probe's answer from the stream's headers and what decoding found."""
    fps = float(stream.average_rate or stream.guessed_rate or Fraction(0))
    codec = stream.codec_context.name
    # GIF decodes to BGRA always: it carries alpha only where some pixel is see-through.
    has_alpha = pix_fmt_has_alpha(tally.pix_fmt) and (codec != "gif" or tally.alpha_seen)
    declared = declared_video_duration(stream)
    fg_range = tally.stats.fg_range
    return VideoProbe(
        container=kind,
        codec=codec,
        pix_fmt=tally.pix_fmt,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=round(fps, 3),
        frames=tally.frames,
        duration_s=tally.duration_s(fps),
        has_alpha=has_alpha,
        has_audio=bool(container.streams.audio),
        alpha_mean=round(float(np.mean(tally.alpha_means)), 4) if tally.alpha_means else None,
        demuxer=container.format.name,
        declared_duration_s=round(declared, 3) if declared else None,
        fg_fraction=tally.stats.fg_fraction,
        fg_min=fg_range[0] if fg_range else None,
        fg_max=fg_range[1] if fg_range else None,
        flicker=tally.stats.flicker,
        decode_error=tally.error,
        alpha_mode=stream.metadata.get("alpha_mode") == "1",
    )
