"""Segmenters over user-supplied ONNX weights, run by onnxruntime (CUDA when present, else CPU).

Two kinds are understood, by their input and output names:

* ``image``: one frame in, one matte out, e.g. BiRefNet (``input_image``, 1x3xHxW ImageNet-
  normalised RGB; output a 1x1xHxW logit or probability map);
* ``recurrent``: RobustVideoMatting (``src, r1i..r4i, downsample_ratio`` ->
  ``fgr, pha, r1o..r4o``); its recurrent states are carried from frame to frame.

Weights come from a local path or any fsspec URL (credentials from the environment, as fsspec
reads them); they are never downloaded from a model hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tasks.engine.segment import Matte, MissingExtra, ModelError, RGBFrame

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_IMAGE_SIDE = 1024  # BiRefNet's training size, for exports with dynamic spatial axes
RECURRENT_IN = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
RECURRENT_OUT = ("pha", "r1o", "r2o", "r3o", "r4o")
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtra(
            "ONNX models need the 'onnx' extra: pip install 'matteflow[onnx]'"
        ) from exc
    return onnxruntime


def _model_source(url: str) -> str | bytes:
    """A local path as is (onnxruntime then finds external weight files beside it), or bytes."""
    from tasks.storage.store import redact_url

    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise ModelError(f"ONNX weights not found: {path}")
        return str(path)
    try:
        import fsspec

        with fsspec.open(url, "rb") as fh:
            data: bytes = fh.read()
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot read ONNX weights from {redact_url(url)}: {exc}") from exc
    return data


def open_session(url: str, *, providers: list[str] | None = None) -> Any:
    """An onnxruntime session over the weights at ``url``, on the best provider available."""
    ort = _ort()
    source = _model_source(url)
    available = set(ort.get_available_providers())
    chosen = providers or [p for p in PREFERRED_PROVIDERS if p in available]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(source, sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises pybind-generated types with no common base
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from exc


def _float_type(node: Any) -> type[np.floating[Any]]:
    return np.float16 if "float16" in str(node.type) else np.float32


def _run(session: Any, outputs: list[str], feed: dict[str, Any]) -> list[Any]:
    try:
        result: list[Any] = session.run(outputs, feed)
    except Exception as exc:  # see open_session
        raise ModelError(f"onnxruntime failed on a frame: {exc}") from exc
    return result


def _to_matte(x: npt.NDArray[Any]) -> Matte:
    m = np.asarray(x, dtype=np.float32)
    while m.ndim > 2:
        m = m[0]
    return m


class OnnxImageSegmenter:
    """A per-frame matting or segmentation model (BiRefNet and alike)."""

    def __init__(self, session: Any, *, side: int | None = None) -> None:
        self._session = session
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            names = [i.name for i in inputs]
            raise ModelError(f"an image model needs one 1x3xHxW input, this one has {names}")
        self._input = inputs[0]
        self._dtype = _float_type(self._input)
        self._output = session.get_outputs()[0].name
        h, w = self._input.shape[2], self._input.shape[3]
        fixed = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        s = side or DEFAULT_IMAGE_SIDE
        self._size = (int(w), int(h)) if fixed else (s, s)
        self._logits: bool | None = None  # decided on the first frame, then kept (no flicker)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return self._size

    def __call__(self, rgb: RGBFrame) -> Matte:
        x = (rgb.astype(np.float32) * np.float32(1.0 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=self._dtype)
        out = _to_matte(_run(self._session, [self._output], {self._input.name: x})[0])
        if self._logits is None:
            self._logits = bool(out.min() < 0.0 or out.max() > 1.0)
        if self._logits:
            out = 1.0 / (1.0 + np.exp(-np.clip(out, -30.0, 30.0)))
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        self._session = None


class OnnxRecurrentSegmenter:
    """RobustVideoMatting-style model: full frame in, alpha out, states carried along."""

    def __init__(self, session: Any, *, downsample_ratio: float | None = None) -> None:
        self._session = session
        ins = {i.name: i for i in session.get_inputs()}
        outs = [o.name for o in session.get_outputs()]
        missing = [n for n in RECURRENT_IN if n not in ins] + [
            n for n in RECURRENT_OUT if n not in outs
        ]
        if missing:
            raise ModelError(f"not a recurrent matting model: missing inputs/outputs {missing}")
        self._dtype = _float_type(ins["src"])
        self._ratio_dtype = _float_type(ins["downsample_ratio"])
        self._ratio = downsample_ratio
        self._states: list[Any] | None = None
        self._shape: tuple[int, ...] | None = None

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height  # the model downsamples internally and refines to full size

    def reset(self) -> None:
        self._states = None

    def __call__(self, rgb: RGBFrame) -> Matte:
        h, w = rgb.shape[:2]
        if self._states is None or self._shape != rgb.shape:
            self._states = [np.zeros((1, 1, 1, 1), dtype=self._dtype)] * 4
            self._shape = rgb.shape
        # RVM's advice: downsample so the coarse pass sees roughly 256-512 pixels.
        ratio = self._ratio or min(1.0, 512.0 / max(h, w))
        src = rgb.astype(np.float32).transpose(2, 0, 1)[None] * np.float32(1.0 / 255.0)
        feed = {
            "src": np.ascontiguousarray(src, dtype=self._dtype),
            "downsample_ratio": np.array([ratio], dtype=self._ratio_dtype),
            **{f"r{i + 1}i": s for i, s in enumerate(self._states)},
        }
        pha, *states = _run(self._session, list(RECURRENT_OUT), feed)
        self._states = states
        return np.clip(_to_matte(pha), 0.0, 1.0)

    def close(self) -> None:
        self._session = None
        self._states = None
