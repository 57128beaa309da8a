"""Stage three: encode matted frames (and the input's audio) into the output container."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tasks.engine.closing import Closing
from tasks.engine.reader import Audio, VideoReader
from tasks.media.formats import FormatSpec

# Encoder settings chosen for speed at good quality on a CPU. libvpx-vp9 with alpha, 1280x720
# Megamind, CPU ms a frame on one thread (PSNR RGB / alpha): realtime cpu-used 8 crf 30: 18.6
# (42.3 / 53.9 dB); crf 36: 16.9 (41.3 / 49.6 dB); good cpu-used 5: 91.8 (44.1 / 54.5 dB);
# aq-mode 0 and tile-columns change nothing on one thread (cpu-used 9 is refused by this
# build). Tiles let row-mt use the encoder threads a larger machine gives it.
ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libvpx-vp9": {
        "deadline": "realtime",
        "cpu-used": "8",
        "row-mt": "1",
        "tile-columns": "2",
        "crf": "30",
        "b": "0",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
    },
    "libx264": {"preset": "veryfast", "crf": "20"},
    "libx265": {"preset": "ultrafast", "crf": "24", "x265-params": "log-level=error"},
    "prores_ks": {"profile": "4", "vendor": "apl0"},
    "gif": {},
}

FAST_PIX_FMTS = ("yuv420p", "yuva420p")  # outputs built straight from the decoded planes


def encoder_threads(codec: str) -> int:
    """Cores left to the encoder once decode and matting have one each (at least one).

    On two cores the stages already fill both; encoder threads on top only add overhead
    (libvpx-vp9 spent ~15% more CPU per frame with two threads than with one). ProRes is the
    exception: at 3-4x the cost of the other stages it is the bottleneck, so it gets them all.
    """
    if codec == "prores_ks":
        return 0  # FFmpeg's automatic choice: every core
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 2)


def _add_video_stream(out: Any, spec: FormatSpec, transparent: bool, reader: VideoReader) -> Any:
    width, height = spec.encoded_size(reader.width, reader.height)
    pix_fmt = spec.alpha_pix_fmt if transparent and spec.alpha_pix_fmt else spec.opaque_pix_fmt
    rate = reader.rate
    stream = out.add_stream(spec.codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = reader.video.time_base or Fraction(1, int(rate))
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = encoder_threads(spec.codec)
    stream.options = dict(ENCODER_OPTIONS.get(spec.codec, {}))
    if spec.codec == "libx265" and spec.container in ("mp4", "mov"):
        stream.codec_tag = "hvc1"
    return stream


def pad_frame(frame: Any, right: int, bottom: int) -> Any:
    """``frame`` grown by its own last column and row: H.264/H.265 in 4:2:0 take only even
    sizes, and repeating the edge (the background, over a colour) shows no seam."""
    rgb = np.pad(frame.to_ndarray(format="rgb24"), ((0, bottom), (0, right), (0, 0)), "edge")
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


def _add_audio_stream(out: Any, spec: FormatSpec, ain: Any) -> Any:
    rate = ain.codec_context.sample_rate or 48000
    if spec.audio_codec == "libopus":
        rate = 48000  # Opus only encodes a few rates; 48 kHz is always valid.
    stream = out.add_stream(spec.audio_codec, rate=rate)
    stream.layout = ain.codec_context.layout.name if ain.codec_context.layout else "stereo"
    return stream


class VideoWriter(Closing):
    """The output file: one video stream like the input's, and its audio when the format has it.

    Frames keep the input's timestamps, so frame count and timing are preserved.
    """

    def __init__(self, dst: Path, spec: FormatSpec, transparent: bool, reader: VideoReader):
        self.container = av.open(str(dst), "w", format=spec.container)
        try:
            self.video = _add_video_stream(self.container, spec, transparent, reader)
            ain = reader.audio
            self.audio = _add_audio_stream(self.container, spec, ain) if ain is not None else None
        except BaseException:
            self.container.close()
            raise
        self.fast = self.video.pix_fmt in FAST_PIX_FMTS
        self.pad = (self.video.width - reader.width, self.video.height - reader.height)
        self.frames = 0
        self.last_time = 0.0  # the input time of the last frame written, in seconds

    def write(self, item: Audio | tuple[Any, int | None, float | None]) -> None:
        """Encode one item from the matte stage: audio, or (frame, input pts, input time)."""
        if isinstance(item, Audio):
            if self.audio is not None:
                item.frame.pts = None
                self.container.mux(self.audio.encode(item.frame))
            return
        new, pts, ftime = item
        if self.pad != (0, 0):
            new = pad_frame(new, *self.pad)
        new.pts = pts if pts is not None else self.frames
        new.time_base = self.video.codec_context.time_base
        self.container.mux(self.video.encode(new))
        if ftime is not None:
            self.last_time = float(ftime)
        self.frames += 1

    def flush(self) -> None:
        """Drain the encoders' delayed frames."""
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))

    def close(self) -> None:
        self.container.close()
