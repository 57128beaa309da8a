"""Stream a video through segmentation and write it in the requested format.

Three stages overlap in threads joined by small bounded queues (``stages.StageThreads``):
``VideoReader`` decodes (and shrinks the frame for the model), ``Matter`` segments, smooths over
time, refines edges and composites, and ``VideoWriter`` encodes (with audio). PyAV, OpenCV and
the model runtimes release the GIL in their heavy calls, so the stages use every core; the
queues keep memory flat however long the video is. Timestamps are carried from input to output,
so frame count and timing are preserved.

Only the reader blames the input (``InputError`` naming the packet and why); any other failure
that is not already a ``MatteflowError`` is a matteflow bug: ``internal_error``, with the
traceback in the log.
"""

from __future__ import annotations

import functools
import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.endpoints.local import LocalOptions
from tasks.endpoints.options import RemovalOptions
from tasks.engine.matter import EngineSettings, Matter
from tasks.engine.reader import Audio, Decoded, VideoReader
from tasks.engine.segment import Segmenter, input_size
from tasks.engine.stages import Cancelled, StageThreads
from tasks.engine.writer import ENCODER_OPTIONS, FAST_PIX_FMTS, VideoWriter, encoder_threads
from tasks.errors import ErrorCode, InputError, MatteflowError
from tasks.media.formats import FormatSpec, OutputFormat, spec_for

__all__ = [
    "ENCODER_OPTIONS",
    "FAST_PIX_FMTS",
    "EngineResult",
    "EngineSettings",
    "encoder_threads",
    "remove_background",
]

log = logging.getLogger("matteflow.engine")


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
    if segmenter is not None:
        result = _guarded(src, dst, spec, options, settings, segmenter)
    else:
        from tasks.engine.models import pooled_segmenter

        local = options if isinstance(options, LocalOptions) else LocalOptions()
        with pooled_segmenter(local) as seg:
            result = _guarded(src, dst, spec, options, settings, seg)
    result.elapsed_s = time.perf_counter() - started
    return result


def _guarded(
    src: Path,
    dst: Path,
    spec: FormatSpec,
    options: RemovalOptions,
    settings: EngineSettings,
    seg: Segmenter,
) -> EngineResult:
    """``_run``, with anything that is not a ``MatteflowError`` reported as matteflow's bug."""
    reset = getattr(seg, "reset", None)
    if callable(reset):
        reset()  # a reused recurrent model must not carry the last video's state into this one
    try:
        return _run(src, dst, spec, options, Matter(seg, settings, spec, options.rgb), seg)
    except MatteflowError:
        raise
    except Exception as exc:
        log.error("local engine failed on %s", src.name, exc_info=exc)
        raise MatteflowError(
            f"local engine error ({type(exc).__name__}: {exc}); the traceback is in the log",
            code=ErrorCode.internal_error,
        ) from exc


def _run(
    src: Path,
    dst: Path,
    spec: FormatSpec,
    options: RemovalOptions,
    matter: Matter,
    seg: Segmenter,
) -> EngineResult:
    """Decode, matte and encode in three overlapping stages."""
    stages = StageThreads()
    with (
        VideoReader(src, audio=spec.audio_codec is not None) as reader,
        VideoWriter(dst, spec, options.transparent, reader) as writer,
    ):
        size = input_size(seg, reader.width, reader.height)
        decoded, matted = stages.new_queue(), stages.new_queue()
        items = reader.items(size, fast=writer.fast)
        stages.start("decode", functools.partial(_decode, stages, items, decoded), decoded)
        stages.start("matte", functools.partial(_matte, stages, matter, decoded, matted), matted)
        try:
            _encode(stages, writer, matted)
        except Cancelled:
            pass  # a stage failed: its error is raised below
        finally:
            stages.finish()
        stages.raise_first_error()
    if writer.frames == 0:
        raise InputError("input has no decodable video frames", code=ErrorCode.input_no_frames)
    fps = float(reader.rate)
    duration = writer.last_time + 1.0 / fps if fps else writer.last_time
    return EngineResult(
        frames=writer.frames,
        width=reader.width,
        height=reader.height,
        fps=round(fps, 3),
        duration_s=round(duration, 3),
        has_audio=reader.audio is not None,
        output_format=spec.name,
        elapsed_s=0.0,
        stage_s={k: round(v, 3) for k, v in stages.busy.items()},
    )


def _decode(stages: StageThreads, items: Iterator[Decoded | Audio], out: queue.Queue[Any]) -> None:
    t0 = time.perf_counter()
    for item in items:
        t0 = stages.timed("decode", t0)
        stages.put(out, item)
        t0 = time.perf_counter()


def _matte(
    stages: StageThreads, matter: Matter, decoded: queue.Queue[Any], out: queue.Queue[Any]
) -> None:
    for item in stages.drain(decoded):
        if isinstance(item, Audio):
            stages.put(out, item)
            continue
        t0 = time.perf_counter()
        new = matter(item)
        stages.timed("matte", t0)
        stages.put(out, (new, item.pts, item.time))


def _encode(stages: StageThreads, writer: VideoWriter, matted: queue.Queue[Any]) -> None:
    for item in stages.drain(matted):
        t0 = time.perf_counter()
        writer.write(item)
        stages.timed("encode", t0)
    t0 = time.perf_counter()
    writer.flush()
    stages.timed("encode", t0)
