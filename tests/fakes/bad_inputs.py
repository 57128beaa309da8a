"""Awkward inputs a real catalog holds, generated small: odd sizes, phone rotation, variable
frame rate, several video streams, audio only, not a video at all."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _frame(width: int, height: int, i: int) -> av.VideoFrame:
    """A light disc moving over a dark background: enough structure for the encoders."""
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width * (0.3 + 0.4 * (i % 10) / 10), height / 2
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < (min(width, height) / 3) ** 2
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[disc] = (220, 180, 150)
    rgb[~disc] = (20, 60, 30)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


def clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 6,
    fps: int = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    pts: list[int] | None = None,
    extra_video_streams: int = 0,
) -> Path:
    """A tiny clip; ``pts`` (in 1/1000 s) gives a variable frame rate."""
    with av.open(str(path), "w") as out:
        streams = []
        for n in range(1 + extra_video_streams):
            stream = out.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = (
                width // (n + 1),
                height // (n + 1),
                pix_fmt,
            )
            if pts is not None:
                stream.codec_context.time_base = Fraction(1, 1000)
            if rotation and n == 0:
                stream.set_display_rotation(rotation)
            streams.append(stream)
        for i in range(frames):
            for stream in streams:
                frame = _frame(stream.width, stream.height, i)
                if pts is not None:
                    frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
                else:
                    frame.pts = i
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
    return path


def audio_only(path: Path, seconds: float = 0.3) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        rate, n = 48000, 1024
        total = int(rate * seconds)
        for start in range(0, total, n):
            t = np.arange(start, min(start + n, total)) / rate
            samples = (0.2 * np.sin(2 * math.pi * 440.0 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Log in</body></html>\n"
)


def not_a_video(path: Path) -> Path:
    path.write_bytes(bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)))
    return path
