"""A corpus of removal outputs, good and broken, written with PyAV from the tiny test clips.

The writer here is independent of the local engine on purpose: verification is tested against
files whose faults are known by construction, not against what the engine happens to produce.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from tasks.engine.composite import GIF_PALETTE, over_colour, to_gif_indices, to_rgba
from tasks.media.formats import FORMATS, FormatSpec, OutputFormat, spec_for

GREEN = (0, 177, 64)
U8 = npt.NDArray[np.uint8]
Matte = npt.NDArray[np.float32]
MatteFn = Callable[[int, int, int], Matte]  # (frame index, width, height) -> matte in [0, 1]

# Fast encoder settings, so the corpus costs little to make.
_OPTIONS: dict[str, dict[str, str]] = {
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "prores_ks": {"profile": "4"},
}


def ellipse_matte(index: int, width: int, height: int) -> Matte:
    """A subject in the middle that drifts a pixel a frame: a plausible, moving matte."""
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width / 2 + index, height / 2
    inside = ((xx - cx) / (width / 4)) ** 2 + ((yy - cy) / (height / 2.6)) ** 2 < 1.0
    return inside.astype(np.float32)


def empty_matte(index: int, width: int, height: int) -> Matte:
    return np.zeros((height, width), np.float32)


def full_matte(index: int, width: int, height: int) -> Matte:
    return np.ones((height, width), np.float32)


def read_rgb(clip: Path) -> tuple[list[U8], Fraction]:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], rate


def _resize(rgb: U8, size: tuple[int, int]) -> U8:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return np.asarray(frame.reformat(width=size[0], height=size[1]).to_ndarray(format="rgb24"))


def write_output(
    clip: Path,
    dst: Path,
    fmt: OutputFormat | str,
    *,
    transparent: bool,
    matte: MatteFn = ellipse_matte,
    keep_alpha: bool = True,
    drop_frame: int | None = None,
    size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = GREEN,
    codec: str | None = None,
    audio_s: float | None = None,
) -> Path:
    """Write ``clip`` as a removal output in ``fmt``.

    Faults on request: ``keep_alpha=False`` encodes a transparent format without its alpha,
    ``drop_frame`` leaves one frame out, ``size`` scales every frame, ``codec`` swaps the encoder.
    ``audio_s`` adds a silent audio track of that length (which may outlast the video).
    """
    spec: FormatSpec = spec_for(fmt)
    frames, rate = read_rgb(clip)
    height, width = frames[0].shape[:2]
    if size is not None:
        frames = [_resize(f, size) for f in frames]
        width, height = size
    encoder = codec or spec.codec
    alpha = transparent and spec.carries_alpha and keep_alpha
    pix_fmt = spec.alpha_pix_fmt if alpha and spec.alpha_pix_fmt else spec.opaque_pix_fmt
    if codec is not None:
        pix_fmt = "yuv420p"
    tb = Fraction(1, int(rate)) if rate.denominator == 1 else 1 / rate
    with av.open(str(dst), "w", format=spec.container) as out:
        stream: Any = out.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = tb
        stream.options = dict(_OPTIONS.get(encoder, {}))
        if encoder == "libx265" and spec.container in ("mp4", "mov"):
            stream.codec_tag = "hvc1"
        if audio_s is not None and spec.audio_codec:
            _write_silence(out, spec.audio_codec, audio_s)
        pts = 0
        for i, rgb in enumerate(frames):
            if i == drop_frame:
                pts += 1
                continue
            m = matte(i, width, height)
            if spec.name is OutputFormat.gif and codec is None:
                idx = (
                    to_gif_indices(rgb, m)
                    if alpha
                    else to_gif_indices(over_colour(rgb, m, background), None)
                )
                new = av.VideoFrame.from_ndarray((idx, GIF_PALETTE), format="pal8")  # type: ignore[arg-type]
            elif alpha:
                new = av.VideoFrame.from_ndarray(to_rgba(rgb, m), format="rgba")
            elif transparent:  # alpha stripped: the subject over black, as a careless encode does
                new = av.VideoFrame.from_ndarray(over_colour(rgb, m, (0, 0, 0)), format="rgb24")
            else:
                new = av.VideoFrame.from_ndarray(over_colour(rgb, m, background), format="rgb24")
            new.pts, new.time_base = pts, tb
            pts += 1
            out.mux(stream.encode(new))
        out.mux(stream.encode(None))
    return dst


def _write_silence(out: Any, codec: str, seconds: float) -> None:
    audio: Any = out.add_stream(codec, rate=48000)
    audio.layout = "mono"
    n, total = 960, int(48000 * seconds)
    for start in range(0, total, n):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, n), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
        out.mux(audio.encode(frame))
    out.mux(audio.encode(None))


def write_mask(clip: Path, dst: Path, *, matte: MatteFn = ellipse_matte) -> Path:
    """A grey mask video (H.264 MP4), as birefnet's ``output_mask`` gives."""
    frames, rate = read_rgb(clip)
    height, width = frames[0].shape[:2]
    with av.open(str(dst), "w") as out:
        stream: Any = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(_OPTIONS["libx264"])
        for i in range(len(frames)):
            grey = (matte(i, width, height) * 255 + 0.5).astype(np.uint8)
            new = av.VideoFrame.from_ndarray(grey, format="gray")
            new.pts = i
            out.mux(stream.encode(new))
        out.mux(stream.encode(None))
    return dst


def truncate(src: Path, dst: Path, keep: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def good_corpus(clip: Path, folder: Path) -> dict[str, tuple[Path, OutputFormat, bool]]:
    """One correct output per format (transparent where the format carries alpha), plus opaque
    versions of the alpha formats; name -> (file, format, transparent)."""
    corpus: dict[str, tuple[Path, OutputFormat, bool]] = {}
    for fmt, spec in FORMATS.items():
        path = write_output(
            clip, folder / f"good_{fmt.value}{spec.extension}", fmt, transparent=spec.carries_alpha
        )
        corpus[fmt.value] = (path, fmt, spec.carries_alpha)
        if spec.carries_alpha:
            opaque = folder / f"good_opaque_{fmt.value}{spec.extension}"
            corpus[f"opaque_{fmt.value}"] = (
                write_output(clip, opaque, fmt, transparent=False),
                fmt,
                False,
            )
    return corpus
