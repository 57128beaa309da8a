"""Helpers for the engine tests: tiny clips, a degraded-truth segmenter, tiny ONNX models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from tasks.media.formats import FormatSpec
from tasks.media.quality import alpha_frames
from tasks.media.verify import Expectation, VerifyReport, verify_output

F32 = npt.NDArray[np.float32]


def write_clip(path: Path, frames: list[npt.NDArray[np.uint8]], fps: int = 20) -> Path:
    """An H.264 clip (near lossless) of the given RGB frames."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "4", "preset": "veryfast"}
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def verify_like(out: Path, spec: FormatSpec, transparent: bool, like: Any) -> VerifyReport:
    """Verify ``out`` for the frame count and size of ``like`` (the input's facts, or the
    engine's result)."""
    expected = Expectation(spec, transparent, like.frames, like.width, like.height)
    return verify_output(out, expected)


def write_alpha(path: Path, alphas: list[F32], fps: int = 20) -> Path:
    """True alpha as a lossless grey video (FFV1), the form ``matte_quality`` reads."""
    h, w = alphas[0].shape
    with av.open(str(path), "w", format="matroska") as out:
        s = out.add_stream("ffv1", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "gray"
        for i, a in enumerate(alphas):
            f = av.VideoFrame.from_ndarray((a * 255.0 + 0.5).astype(np.uint8), format="gray")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def moving_disc(
    d: Path, *, width: int = 160, height: int = 96, frames: int = 24, step: float = 1.5
) -> tuple[Path, Path]:
    """A bright textured disc gliding over a still dark texture; returns (clip, true alpha).

    Its edge is an image edge and its motion is trackable: the cleanest case for judging
    refinement (does the edge follow the image?) and smoothing (flicker gone, no lag?).
    """
    rng = np.random.default_rng(3)
    bg = cv2.GaussianBlur(rng.uniform(0, 90, (height, width, 3)).astype(np.float32), (0, 0), 1.5)
    fg = cv2.GaussianBlur(rng.uniform(160, 255, (height, width, 3)).astype(np.float32), (0, 0), 1.5)
    rgbs, alphas = [], []
    r = height * 0.3
    for i in range(frames):
        cx, cy = width * 0.3 + step * i, height * 0.5
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        a = np.clip(r + 0.5 - np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2), 0.0, 1.0)
        comp = fg * a[..., None] + bg * (1.0 - a[..., None])
        rgbs.append((comp + 0.5).astype(np.uint8))
        alphas.append(a.astype(np.float32))
    return write_clip(d / "disc.mp4", rgbs), write_alpha(d / "disc_alpha.mkv", alphas)


def rgb_frames(path: Path) -> list[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


class CoarseNoisyTruth:
    """A stand-in model: the true alpha at 1/4 size plus fresh noise every frame.

    Like a real low-resolution model it has blurry edges and flickers, but deterministically,
    so smoothing and refinement can be judged on numbers.
    """

    def __init__(self, truth: Path, *, noise: float = 0.08, seed: int = 7) -> None:
        self.truth = list(alpha_frames(truth))
        self.i = 0
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        h, w = self.truth[0].shape
        self.coarse = (max(4, w // 4), max(4, h // 4))

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return width // 2, height // 2

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> F32:
        t = self.truth[min(self.i, len(self.truth) - 1)]
        self.i += 1
        m = cv2.resize(t, self.coarse, interpolation=cv2.INTER_AREA)
        m = m + self.rng.normal(0.0, self.noise, m.shape).astype(np.float32)
        return np.clip(m, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        pass


class Ellipse:
    """A cheap segmenter for format tests: a centred ellipse, at a coarse 32x32."""

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return 32, 32

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> F32:
        m = np.zeros((32, 32), np.float32)
        cv2.ellipse(m, (16, 16), (9, 12), 0, 0, 360, (1.0,), -1)
        return m

    def close(self) -> None:
        pass


def _gauss_kernels(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[F32, F32]:
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    r = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(r**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    fx = np.outer(g, -r * g / sigma**2)
    fx /= np.sqrt((fx**2).sum())
    return fx.astype(np.float32), fx.T.copy().astype(np.float32)


_FX, _FY = _gauss_kernels()


def grad_error(p: F32, t: F32) -> float:
    """RobustVideoMatting's Grad for one frame (Gaussian derivatives, sigma 1.4), /1e3."""

    def mag(a: F32) -> F32:
        a = cv2.normalize(a, None, 1.0, 0.0, cv2.NORM_MINMAX)
        gx = cv2.filter2D(a, -1, _FX, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.filter2D(a, -1, _FY, borderType=cv2.BORDER_REPLICATE)
        return np.sqrt(gx**2 + gy**2)

    return float(((mag(p) - mag(t)) ** 2).sum()) / 1000.0


def video_grad_error(predicted: Path, truth: Path) -> float:
    pairs = zip(alpha_frames(predicted), alpha_frames(truth), strict=False)
    return float(np.mean([grad_error(p, t) for p, t in pairs]))


def mean_alpha_change(path: Path) -> float:
    a = list(alpha_frames(path))
    return float(np.mean([np.abs(x - y).mean() for x, y in zip(a[1:], a[:-1], strict=True)]))


# ----------------------------------------------------------------------------- tiny ONNX models


def _save(model: Any, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_image_model(path: Path, *, side: int | None = 32, gain: float = 8.0) -> Path:
    """BiRefNet's interface: ``input_image`` 1x3xHxW -> 1x1xHxW logits (gain x channel mean).

    ``side`` None gives dynamic spatial axes.
    """
    from onnx import TensorProto, helper

    dims: list[Any] = [1, 3, side, side] if side else [1, 3, "height", "width"]
    out_dims: list[Any] = [1, 1, side, side] if side else [1, 1, "height", "width"]
    x = helper.make_tensor_value_info("input_image", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("output_image", TensorProto.FLOAT, out_dims)
    g = helper.make_tensor("gain", TensorProto.FLOAT, [], [gain])
    nodes = [
        helper.make_node("ReduceMean", ["input_image"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m", "gain"], ["output_image"]),
    ]
    graph = helper.make_graph(nodes, "tiny_birefnet", [x], [y], initializer=[g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def tiny_recurrent_model(path: Path) -> Path:
    """RobustVideoMatting's interface; ``pha = r1o = 0.5 * r1i + 0.5 * grey(src)``.

    So the output is an exponential average of the grey frames, which only comes out right
    when the engine carries the recurrent state from frame to frame.
    """
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    src = helper.make_tensor_value_info("src", f, [1, 3, "h", "w"])
    rec_in = [helper.make_tensor_value_info(f"r{i}i", f, [1, "c", "rh", "rw"]) for i in range(1, 5)]
    ratio = helper.make_tensor_value_info("downsample_ratio", f, [1])
    outs = [
        helper.make_tensor_value_info("fgr", f, [1, 3, "h", "w"]),
        helper.make_tensor_value_info("pha", f, [1, 1, "h", "w"]),
        helper.make_tensor_value_info("r1o", f, [1, 1, "h", "w"]),
        *[helper.make_tensor_value_info(f"r{i}o", f, [1, "c", "rh", "rw"]) for i in range(2, 5)],
    ]
    half = helper.make_tensor("half", f, [], [0.5])
    nodes = [
        helper.make_node("ReduceMean", ["src"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["grey", "half"], ["g2"]),
        helper.make_node("Mul", ["r1i", "half"], ["r2"]),
        helper.make_node("Add", ["g2", "r2"], ["ema"]),
        helper.make_node("Div", ["downsample_ratio", "downsample_ratio"], ["one"]),
        helper.make_node("Mul", ["ema", "one"], ["pha"]),
        helper.make_node("Identity", ["pha"], ["r1o"]),
        helper.make_node("Identity", ["src"], ["fgr"]),
        *[helper.make_node("Identity", [f"r{i}i"], [f"r{i}o"]) for i in range(2, 5)],
    ]
    graph = helper.make_graph(nodes, "tiny_rvm", [src, *rec_in, ratio], outs, initializer=[half])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)
