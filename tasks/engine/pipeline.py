"""Stream a video through segmentation and write it in the requested format.

Three stages overlap in threads joined by small bounded queues: decode (and shrink the frame for
the model), matte (segment, smooth over time, refine edges, composite), and encode (with audio).
PyAV, OpenCV and the model runtimes release the GIL in their heavy calls, so the stages use
every core; the queues keep memory flat however long the video is. Timestamps are carried from
input to output, so frame count and timing are preserved.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from tasks.endpoints.local import LocalOptions
from tasks.endpoints.options import RemovalOptions
from tasks.engine.composite import (
    GIF_PALETTE,
    over_colour,
    plane_array,
    small_rgb,
    to_gif_indices,
    to_rgba,
    yuv_colour,
    yuv_over_colour,
    yuva_frame,
)
from tasks.engine.refine import EdgeRefiner, upscale_alpha
from tasks.engine.segment import RGBFrame, Segmenter, clean_matte, input_size
from tasks.engine.smooth import Smoother, make_smoother
from tasks.errors import ErrorCode, InputError
from tasks.media.formats import FormatSpec, OutputFormat, spec_for

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

FAST_PIX_FMTS = ("yuv420p", "yuva420p")  # outputs built straight from the decoded planes
QUEUE_FRAMES = 6  # per queue: enough to ride out jitter between stages, small for memory
_END = object()


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


@dataclass(frozen=True)
class EngineSettings:
    """The engine's knobs, read from ``LocalOptions`` (plain removal options get defaults)."""

    smoothing: float = 0.2
    temporal: str = "flow"
    refine_edges: bool = True

    @classmethod
    def from_options(
        cls, options: RemovalOptions, smoothing: float | None = None
    ) -> EngineSettings:
        if isinstance(options, LocalOptions):
            base = cls(options.smoothing, options.temporal.value, options.refine_edges)
        else:
            base = cls()
        if smoothing is not None:
            base = cls(smoothing, base.temporal, base.refine_edges)
        return base


@dataclass
class _Decoded:
    frame: Any  # av.VideoFrame, yuv420p on the fast path
    small: RGBFrame  # the frame at the segmenter's input size
    rgb: RGBFrame | None  # full-size RGB, only off the fast path


@dataclass
class _Audio:
    frame: Any


class _Cancelled(Exception):
    """Another stage failed: stop quietly, its error is the one reported."""


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


def _open_input(src: Path) -> Any:
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


def _add_video_stream(out: Any, spec: FormatSpec, transparent: bool, vin: Any) -> Any:
    width, height = vin.codec_context.width, vin.codec_context.height
    pix_fmt = spec.alpha_pix_fmt if transparent and spec.alpha_pix_fmt else spec.opaque_pix_fmt
    if pix_fmt.endswith("420p") and (width % 2 or height % 2):
        raise InputError(
            f"{width}x{height} has an odd side; {spec.name.value} needs even sizes (4:2:0)",
            code=ErrorCode.input_odd_size,
        )
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    stream = out.add_stream(spec.codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = vin.time_base or Fraction(1, int(rate))
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = encoder_threads(spec.codec)
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


class _Matter:
    """Stage two: segment, smooth, refine and composite one decoded frame."""

    def __init__(
        self,
        seg: Segmenter,
        settings: EngineSettings,
        spec: FormatSpec,
        colour: tuple[int, int, int] | None,
    ) -> None:
        self.seg, self.spec, self.colour = seg, spec, colour
        self.smoother: Smoother | None = make_smoother(settings.temporal, settings.smoothing)
        gain = float(getattr(seg, "edge_gain", 1.0))
        self.refiner = EdgeRefiner(gain=gain) if settings.refine_edges else None
        self._yuv: tuple[int, ...] | None = None

    def alpha(self, item: _Decoded, guide: Any) -> Any:
        matte = clean_matte(self.seg(item.small))
        if self.smoother is not None:
            small_grey = np.asarray(cv2.cvtColor(item.small, cv2.COLOR_RGB2GRAY), np.uint8)
            matte = self.smoother(matte, small_grey)
        h, w = guide.shape[:2]
        if self.refiner is not None:
            return self.refiner(matte, guide)
        return upscale_alpha(matte, w, h)

    def __call__(self, item: _Decoded) -> Any:
        frame = item.frame
        if item.rgb is None:  # fast path: 4:2:0 planes in, 4:2:0 planes out
            alpha = self.alpha(item, plane_array(frame.planes[0]))
            if self.colour is None:
                return yuva_frame(frame, alpha)
            if self._yuv is None:
                self._yuv = yuv_colour(self.colour, frame.colorspace, frame.color_range)
            return yuv_over_colour(frame, alpha, self._yuv)
        rgb = item.rgb
        alpha = self.alpha(item, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        if self.spec.name is OutputFormat.gif:
            if self.colour is None:
                idx = to_gif_indices(rgb, alpha)
            else:
                idx = to_gif_indices(over_colour(rgb, alpha, self.colour), None)
            new = av.VideoFrame.from_ndarray((idx, GIF_PALETTE), format="pal8")  # type: ignore[arg-type]
        elif self.colour is None:
            new = av.VideoFrame.from_ndarray(to_rgba(rgb, alpha), format="rgba")
        else:
            new = av.VideoFrame.from_ndarray(over_colour(rgb, alpha, self.colour), format="rgb24")
        new.pts, new.time_base = frame.pts, frame.time_base
        return new


class _Stages:
    """Runs producer stages in threads; the first error stops them all and is re-raised."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.busy: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Cancelled

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Cancelled

    def start(self, name: str, body: Callable[[], None], out: queue.Queue[Any]) -> None:
        def run() -> None:
            try:
                body()
            except _Cancelled:
                pass
            except BaseException as exc:  # handed to the main thread, which re-raises it
                self.errors.append(exc)
                self.stop.set()
            finally:
                with contextlib.suppress(_Cancelled):
                    self.put(out, _END)

        thread = threading.Thread(target=run, name=f"matteflow-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def timed(self, name: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.busy[name] = self.busy.get(name, 0.0) + t1 - t0
        return t1

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()


def remove_background(
    src: Path,
    dst: Path,
    options: RemovalOptions,
    *,
    segmenter: Segmenter | None = None,
    smoothing: float | None = None,
) -> EngineResult:
    """Write ``dst`` with the background of ``src`` removed as ``options`` ask.

    ``segmenter`` overrides the model the options name (tests, callers that reuse one);
    ``smoothing`` overrides the options' temporal weight.
    """
    spec = spec_for(options.resolved_format)
    settings = EngineSettings.from_options(options, smoothing)
    started = time.perf_counter()
    own_segmenter = segmenter is None
    if segmenter is None:
        from tasks.engine.models import build_segmenter

        segmenter = build_segmenter(
            options if isinstance(options, LocalOptions) else LocalOptions()
        )
    seg: Segmenter = segmenter
    reset = getattr(seg, "reset", None)
    if callable(reset):
        reset()  # a reused recurrent model must not carry the last video's state into this one
    frames = 0
    last_time = 0.0
    stages = _Stages()
    try:
        with _open_input(src) as inp:
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            ain = inp.streams.audio[0] if inp.streams.audio and spec.audio_codec else None
            width, height = vin.codec_context.width, vin.codec_context.height
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            with av.open(str(dst), "w", format=spec.container) as out:
                vout = _add_video_stream(out, spec, options.transparent, vin)
                aout = _add_audio_stream(out, spec, ain) if ain is not None else None
                fast = vout.pix_fmt in FAST_PIX_FMTS
                sw, sh = input_size(seg, width, height)
                matter = _Matter(seg, settings, spec, options.rgb)
                decoded: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
                matted: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)

                def decode() -> None:
                    streams = [s for s in (vin, ain) if s is not None]
                    t0 = time.perf_counter()
                    for packet in inp.demux(streams):
                        for frame in packet.decode():
                            if packet.stream is not vin:
                                t0 = stages.timed("decode", t0)
                                stages.put(decoded, _Audio(frame))
                                t0 = time.perf_counter()
                                continue
                            if fast:
                                if frame.format.name != "yuv420p":  # to limited-range 4:2:0
                                    frame = frame.reformat(format="yuv420p", dst_color_range=1)
                                if (sw, sh) == (width, height):
                                    small = frame.to_ndarray(format="rgb24")
                                else:
                                    small = small_rgb(frame, (sw, sh))
                                item = _Decoded(frame, small, None)
                            else:
                                rgb = frame.to_ndarray(format="rgb24")
                                small = rgb
                                if (sw, sh) != (width, height):
                                    small = cv2.resize(
                                        rgb, (sw, sh), interpolation=cv2.INTER_LINEAR
                                    )
                                item = _Decoded(frame, small, rgb)
                            t0 = stages.timed("decode", t0)
                            stages.put(decoded, item)
                            t0 = time.perf_counter()

                def matte() -> None:
                    while (item := stages.get(decoded)) is not _END:
                        if isinstance(item, _Audio):
                            stages.put(matted, item)
                            continue
                        t0 = time.perf_counter()
                        new = matter(item)
                        stages.timed("matte", t0)
                        stages.put(matted, (new, item.frame.pts, item.frame.time))

                stages.start("decode", decode, decoded)
                stages.start("matte", matte, matted)
                try:
                    while (item := stages.get(matted)) is not _END:
                        t0 = time.perf_counter()
                        if isinstance(item, _Audio):
                            if aout is not None:
                                item.frame.pts = None
                                out.mux(aout.encode(item.frame))
                            continue
                        new, pts, ftime = item
                        new.pts = pts if pts is not None else frames
                        new.time_base = vout.codec_context.time_base
                        out.mux(vout.encode(new))
                        if ftime is not None:
                            last_time = float(ftime)
                        frames += 1
                        stages.timed("encode", t0)
                    t0 = time.perf_counter()
                    out.mux(vout.encode(None))
                    if aout is not None:
                        out.mux(aout.encode(None))
                    stages.timed("encode", t0)
                except _Cancelled:
                    pass  # a stage failed: its error is raised below
                finally:
                    stages.finish()
                if stages.errors:
                    raise stages.errors[0]
    except (av.error.FFmpegError, ValueError) as exc:
        raise InputError(f"could not process video: {exc}", code=ErrorCode.engine_failed) from exc
    finally:
        if own_segmenter:
            seg.close()
    if frames == 0:
        raise InputError("input has no decodable video frames", code=ErrorCode.input_no_frames)
    fps = float(rate)
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
        stage_s={k: round(v, 3) for k, v in stages.busy.items()},
    )
