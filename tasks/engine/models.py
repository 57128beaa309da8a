"""Build the segmenter that a job's options ask for, and keep built ones for the next job.

A worker process runs many jobs: models are loaded once per process and handed from job to job
(``pooled_segmenter``), so a short clip does not pay for loading a model. A segmenter is used by
one job at a time; jobs running at once in one process each get their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.endpoints.local import LocalModel, LocalOptions, OnnxKind
from tasks.engine.segment import Segmenter, SelfieSegmenter
from tasks.errors import InputError

MAX_IDLE_PER_MODEL = 4  # idle segmenters kept per model: one per job a worker runs at once

_idle: dict[tuple[object, ...], list[Segmenter]] = {}
_idle_lock = threading.Lock()


def build_segmenter(options: LocalOptions) -> Segmenter:
    """The MediaPipe selfie model, U²-Net-p, or the user's ONNX weights; missing extras say which."""
    if options.model is LocalModel.general:
        from tasks.engine.general import GeneralSegmenter, general_session

        return GeneralSegmenter(general_session())
    if options.model is LocalModel.onnx:
        from tasks.engine.onnx_engine import (
            OnnxImageSegmenter,
            OnnxRecurrentSegmenter,
            open_session,
        )

        assert options.onnx_model_url is not None  # the options' validator guarantees it
        session = open_session(options.onnx_model_url)
        if options.onnx_kind is OnnxKind.recurrent:
            return OnnxRecurrentSegmenter(session, downsample_ratio=options.onnx_downsample_ratio)
        return OnnxImageSegmenter(session, side=options.onnx_input_side)
    return SelfieSegmenter(landscape=options.model is LocalModel.selfie_landscape)


def _model_key(options: LocalOptions) -> tuple[object, ...]:
    return (
        options.model.value,
        options.onnx_model_url,
        options.onnx_kind.value,
        options.onnx_input_side,
        options.onnx_downsample_ratio,
    )


@contextmanager
def pooled_segmenter(options: LocalOptions) -> Iterator[Segmenter]:
    """A segmenter for ``options`` from this process's idle ones, or a new one; kept after.

    One that raised (other than for a bad input) is closed rather than kept: its state is not
    to be trusted.
    """
    key = _model_key(options)
    with _idle_lock:
        idle = _idle.get(key)
        seg = idle.pop() if idle else None
    if seg is None:
        seg = build_segmenter(options)
    try:
        yield seg
    except InputError:
        _keep(key, seg)  # the input was bad, not the model
        raise
    except BaseException:
        seg.close()
        raise
    _keep(key, seg)


def _keep(key: tuple[object, ...], seg: Segmenter) -> None:
    with _idle_lock:
        idle = _idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_MODEL:
            idle.append(seg)
            return
    seg.close()


def close_idle_segmenters() -> None:
    """Close every kept segmenter (tests; a worker shutting down)."""
    with _idle_lock:
        kept = [seg for idle in _idle.values() for seg in idle]
        _idle.clear()
    for seg in kept:
        seg.close()
