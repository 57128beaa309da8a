"""Sample clips generated offline from scikit-image's public-domain images.

* a person clip: a slow pan and zoom over ``astronaut.png``;
* a composite with known alpha: an astronaut cut-out moving over a scrolling brick wall,
  written with its true alpha as a lossless grey video so matte quality can be measured.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]


def _image(name: str) -> U8:
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("sample clips need scikit-image: pip install 'matteflow[dev]'") from exc
    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.dstack([img] * 3)
    return img[..., :3].astype(np.uint8)


def _resize(img: U8, width: int, height: int) -> U8:
    import cv2

    return np.asarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))


def _writer(path: Path, width: int, height: int, fps: int, *, audio: bool) -> tuple[Any, Any, Any]:
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = width, height, "yuv420p"
    v.options = {"preset": "veryfast", "crf": "18"}
    a = None
    if audio:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
    return out, v, a


def _write_tone(out: Any, stream: Any, seconds: float) -> None:
    rate, n = 48000, 1024
    total = int(rate * seconds)
    for start in range(0, total, n):
        t = (np.arange(start, min(start + n, total)) / rate).astype(np.float32)
        samples = (0.2 * np.sin(2 * math.pi * 440.0 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_person_clip(
    path: Path,
    *,
    width: int = 640,
    height: int = 360,
    seconds: float = 3.0,
    fps: int = 25,
    audio: bool = True,
) -> Path:
    """A slow pan and zoom over the astronaut photograph, with a 440 Hz tone."""
    img = _image("astronaut")
    h, w = img.shape[:2]
    frames = max(1, round(seconds * fps))
    out, v, a = _writer(path, width, height, fps, audio=audio)
    with out:
        for i in range(frames):
            p = i / max(1, frames - 1)
            zoom = 1.0 - 0.2 * p
            cw, ch = int(w * zoom), int(w * zoom * height / width)
            ch = min(ch, h)
            x0 = int((w - cw) * (0.3 + 0.4 * p))
            y0 = int((h - ch) * 0.2)
            crop = img[y0 : y0 + ch, x0 : x0 + cw]
            frame = av.VideoFrame.from_ndarray(_resize(crop, width, height), format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            _write_tone(out, a, frames / fps)
    return path


def _cutout(size: int) -> tuple[U8, npt.NDArray[np.float32]]:
    """The astronaut's upper body and its alpha: an ellipse head on a rounded torso, feathered."""
    import cv2

    img = _resize(_image("astronaut"), size, size)
    alpha = np.zeros((size, size), dtype=np.uint8)
    s = size / 512.0
    cv2.ellipse(
        alpha, (int(225 * s), int(130 * s)), (int(95 * s), int(115 * s)), 0, 0, 360, (255,), -1
    )
    cv2.ellipse(
        alpha, (int(220 * s), int(470 * s)), (int(200 * s), int(240 * s)), 0, 180, 360, (255,), -1
    )
    cv2.rectangle(alpha, (int(20 * s), int(470 * s)), (int(420 * s), size - 1), (255,), -1)
    soft = cv2.GaussianBlur(alpha, (0, 0), sigmaX=max(1.0, 1.5 * s)).astype(np.float32) / 255.0
    return img, soft


def make_composite_clip(
    path: Path,
    alpha_path: Path,
    *,
    width: int = 640,
    height: int = 360,
    seconds: float = 3.0,
    fps: int = 25,
) -> Path:
    """Cut-out over a scrolling brick wall; the true alpha goes to ``alpha_path`` (FFV1 grey)."""
    size = height
    fg, fa = _cutout(size)
    bg = _resize(_image("brick"), width * 2, height)
    frames = max(1, round(seconds * fps))
    out, v, _ = _writer(path, width, height, fps, audio=False)
    truth = av.open(str(alpha_path), "w", format="matroska")
    tv = truth.add_stream("ffv1", rate=fps)
    tv.width, tv.height, tv.pix_fmt = width, height, "gray"
    with out, truth:
        for i in range(frames):
            p = i / max(1, frames - 1)
            shift = int(p * width)
            canvas = bg[:, shift : shift + width].astype(np.float32)
            alpha = np.zeros((height, width), dtype=np.float32)
            x = int((width - size) * (0.2 + 0.6 * p))
            bob = int(6 * math.sin(2 * math.pi * p))
            y0, y1 = max(0, bob), min(height, size + bob)
            fy0 = y0 - bob
            alpha[y0:y1, x : x + size] = fa[fy0 : fy0 + (y1 - y0)]
            fgc = np.zeros_like(canvas)
            fgc[y0:y1, x : x + size] = fg[fy0 : fy0 + (y1 - y0)]
            comp = fgc * alpha[..., None] + canvas * (1.0 - alpha[..., None])
            frame = av.VideoFrame.from_ndarray((comp + 0.5).astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
            a8 = (alpha * 255.0 + 0.5).astype(np.uint8)
            tframe = av.VideoFrame.from_ndarray(a8, format="gray")
            tframe.pts = i
            truth.mux(tv.encode(tframe))
        out.mux(v.encode(None))
        truth.mux(tv.encode(None))
    return path
