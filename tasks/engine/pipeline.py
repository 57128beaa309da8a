"""Stream a video through segmentation and write it in the requested format.

Frames are decoded, processed and encoded one at a time, so memory does not grow with length.
Timestamps are carried from input to output, so frame count and timing are preserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from tasks.engine.composite import GIF_PALETTE, over_colour, to_gif_indices, to_rgba
from tasks.engine.segment import Segmenter, SelfieSegmenter
from tasks.engine.smooth import EmaSmoother
from tasks.errors import InputError
from tasks.formats import FormatSpec, OutputFormat, spec_for
from tasks.options import RemovalOptions

# Encoder settings chosen for speed at good quality on a CPU.
ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libvpx-vp9": {
        "deadline": "realtime",
        "cpu-used": "8",
        "row-mt": "1",
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


@dataclass
class EngineResult:
    """What the engine did to one video."""

    frames: int
    width: int
    height: int
    fps: float
    duration_s: float
    has_audio: bool
    output_format: OutputFormat
    elapsed_s: float
    stage_s: dict[str, float] = field(default_factory=dict)


def _open_input(src: Path) -> Any:
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"input is not a readable video: {exc}", code="input_undecodable") from exc
    if not container.streams.video:
        container.close()
        raise InputError("input has no video stream", code="input_no_video")
    return container


def _add_video_stream(out: Any, spec: FormatSpec, transparent: bool, vin: Any) -> Any:
    width, height = vin.codec_context.width, vin.codec_context.height
    pix_fmt = spec.alpha_pix_fmt if transparent and spec.alpha_pix_fmt else spec.opaque_pix_fmt
    if pix_fmt.endswith("420p") and (width % 2 or height % 2):
        raise InputError(
            f"{width}x{height} has an odd side; {spec.name.value} needs even sizes (4:2:0)",
            code="input_odd_size",
        )
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    stream = out.add_stream(spec.codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = vin.time_base or Fraction(1, int(rate))
    stream.thread_type = "AUTO"
    stream.options = dict(ENCODER_OPTIONS.get(spec.codec, {}))
    if spec.codec == "libx265" and spec.container in ("mp4", "mov"):
        stream.codec_tag = "hvc1"
    return stream


def _add_audio_stream(out: Any, spec: FormatSpec, ain: Any) -> Any:
    rate = ain.codec_context.sample_rate or 48000
    if spec.audio_codec == "libopus":
        rate = 48000  # Opus only encodes a few rates; 48 kHz is always valid.
    stream = out.add_stream(spec.audio_codec, rate=rate)
    stream.layout = ain.codec_context.layout.name if ain.codec_context.layout else "stereo"
    return stream


def remove_background(
    src: Path,
    dst: Path,
    options: RemovalOptions,
    *,
    segmenter: Segmenter | None = None,
    smoothing: float = 0.6,
) -> EngineResult:
    """Write ``dst`` with the background of ``src`` removed as ``options`` ask."""
    spec = spec_for(options.resolved_format)
    colour = options.rgb
    started = time.perf_counter()
    stage = {"decode": 0.0, "segment": 0.0, "encode": 0.0}
    own_segmenter = segmenter is None
    seg: Segmenter = segmenter if segmenter is not None else SelfieSegmenter()
    smoother = EmaSmoother(smoothing)
    frames = 0
    last_time = 0.0
    with _open_input(src) as inp:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio and spec.audio_codec else None
        try:
            with av.open(str(dst), "w", format=spec.container) as out:
                vout = _add_video_stream(out, spec, options.transparent, vin)
                aout = _add_audio_stream(out, spec, ain) if ain is not None else None
                streams = [s for s in (vin, ain) if s is not None]
                t0 = time.perf_counter()
                for packet in inp.demux(streams):
                    for frame in packet.decode():
                        if aout is not None and packet.stream is ain:
                            frame.pts = None
                            out.mux(aout.encode(frame))
                            continue
                        rgb = frame.to_ndarray(format="rgb24")
                        t1 = time.perf_counter()
                        stage["decode"] += t1 - t0
                        matte = smoother(seg(rgb))
                        t2 = time.perf_counter()
                        stage["segment"] += t2 - t1
                        if spec.name is OutputFormat.gif:
                            idx = to_gif_indices(rgb, matte if colour is None else None)
                            if colour is not None:
                                idx = to_gif_indices(over_colour(rgb, matte, colour), None)
                            new = av.VideoFrame.from_ndarray((idx, GIF_PALETTE), format="pal8")  # type: ignore[arg-type]
                        elif colour is None:
                            new = av.VideoFrame.from_ndarray(to_rgba(rgb, matte), format="rgba")
                        else:
                            new = av.VideoFrame.from_ndarray(
                                over_colour(rgb, matte, colour), format="rgb24"
                            )
                        new.pts = frame.pts if frame.pts is not None else frames
                        new.time_base = vout.codec_context.time_base
                        out.mux(vout.encode(new))
                        if frame.time is not None:
                            last_time = float(frame.time)
                        frames += 1
                        t0 = time.perf_counter()
                        stage["encode"] += t0 - t2
                out.mux(vout.encode(None))
                if aout is not None:
                    out.mux(aout.encode(None))
        except (av.error.FFmpegError, ValueError) as exc:
            raise InputError(f"could not process video: {exc}", code="engine_failed") from exc
        finally:
            if own_segmenter:
                seg.close()
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        fps = float(rate)
        width, height = vin.codec_context.width, vin.codec_context.height
    if frames == 0:
        raise InputError("input has no decodable video frames", code="input_no_frames")
    duration = last_time + 1.0 / fps if fps else last_time
    return EngineResult(
        frames=frames,
        width=width,
        height=height,
        fps=round(fps, 3),
        duration_s=round(duration, 3),
        has_audio=ain is not None,
        output_format=spec.name,
        elapsed_s=time.perf_counter() - started,
        stage_s={k: round(v, 3) for k, v in stage.items()},
    )
