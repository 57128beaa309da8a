"""Turn a frame and its 8-bit alpha into the output pixels.

For 4:2:0 outputs (VP9, H.264, H.265) the decoded planes are used as they are: transparent
output only gains an alpha plane, and a solid background is blended per plane in YUV (the
colour converted once), so no full-frame RGB round trip is paid per frame. ProRes and GIF take
the RGB route.
"""

from __future__ import annotations

import functools
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from tasks.engine.segment import RGBFrame

Alpha8 = npt.NDArray[np.uint8]
U8 = npt.NDArray[np.uint8]

# GIF palette: a 6x7x6 colour cube (252 entries) plus one fully transparent entry.
GIF_TRANSPARENT_INDEX = 255
_LEVELS = (6, 7, 6)

# FFmpeg's AVColorSpace values that mean BT.709; anything else is treated as BT.601 (sws's default).
_BT709 = 1
_JPEG_RANGE = 2


def _gif_palette() -> U8:
    r, g, b = (np.linspace(0, 255, n).round().astype(np.uint8) for n in _LEVELS)
    cube = np.stack(np.meshgrid(r, g, b, indexing="ij"), axis=-1).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)  # ARGB rows, as PyAV's pal8 wants them
    palette[:, 0] = 255
    palette[: len(cube), 1:] = cube
    # FFmpeg's gif encoder treats the entry with the lowest alpha as the transparent one.
    palette[GIF_TRANSPARENT_INDEX, 0] = 0
    return palette


GIF_PALETTE = _gif_palette()


def as_alpha8(alpha: npt.NDArray[Any]) -> Alpha8:
    """8-bit alpha; a float matte in [0, 1] (the older calling convention) is rounded to it."""
    if alpha.dtype == np.uint8:
        return alpha
    return np.asarray(cv2.convertScaleAbs(np.clip(alpha, 0.0, 1.0), alpha=255.0), np.uint8)


def to_rgba(rgb: RGBFrame, alpha: npt.NDArray[Any]) -> U8:
    return np.dstack((rgb, as_alpha8(alpha)))


@functools.lru_cache(maxsize=64)
def _blend_lut(value: int) -> U8:
    """``round(value * (255 - a) / 255)`` for every alpha ``a``: the background's share."""
    a = np.arange(256, dtype=np.float32)
    return np.asarray((value * (255.0 - a) / 255.0 + 0.5).astype(np.uint8))


def _blend(plane: U8, alpha: Alpha8, value: int, dst: U8 | None = None) -> U8:
    """``plane * a + value * (1 - a)`` in 8 bits, into ``dst`` when given (a frame plane)."""
    fg = cv2.multiply(plane, alpha, scale=1.0 / 255.0)
    bg = cv2.LUT(alpha, _blend_lut(value))
    if dst is None:
        return np.asarray(cv2.add(fg, bg), dtype=np.uint8)
    cv2.add(fg, bg, dst=dst)
    return dst


def over_colour(rgb: RGBFrame, alpha: npt.NDArray[Any], colour: tuple[int, int, int]) -> RGBFrame:
    a8 = as_alpha8(alpha)
    return np.dstack([_blend(np.ascontiguousarray(rgb[..., c]), a8, colour[c]) for c in range(3)])


def to_gif_indices(rgb: RGBFrame, alpha: npt.NDArray[Any] | None) -> U8:
    """Quantise to the fixed palette; pixels under half opacity become the transparent index."""
    idx = np.zeros(rgb.shape[:2], dtype=np.int32)
    for channel, levels in enumerate(_LEVELS):
        q = (rgb[..., channel].astype(np.int32) * (levels - 1) + 127) // 255
        idx = idx * levels + q
    out = idx.astype(np.uint8)
    if alpha is not None:
        out[as_alpha8(alpha) < 128] = GIF_TRANSPARENT_INDEX
    return out


def _kr_kb(colorspace: int) -> tuple[float, float]:
    return (0.2126, 0.0722) if colorspace == _BT709 else (0.299, 0.114)


def yuv_colour(colour: tuple[int, int, int], colorspace: int, color_range: int) -> tuple[int, ...]:
    """The (Y, U, V) code values of an RGB colour in the frame's matrix and range."""
    kr, kb = _kr_kb(colorspace)
    r, g, b = (c / 255.0 for c in colour)
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    pb, pr = (b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr))
    if color_range == _JPEG_RANGE:
        vals = (255.0 * y, 128.0 + 255.0 * pb, 128.0 + 255.0 * pr)
    else:
        vals = (16.0 + 219.0 * y, 128.0 + 224.0 * pb, 128.0 + 224.0 * pr)
    return tuple(int(min(255.0, max(0.0, v)) + 0.5) for v in vals)


def yuv_to_rgb_matrix(colorspace: int, color_range: int) -> npt.NDArray[np.float32]:
    """3x4 affine map from (Y, U, V) code values to RGB 0..255, for ``cv2.transform``."""
    kr, kb = _kr_kb(colorspace)
    kg = 1.0 - kr - kb
    full = color_range == _JPEG_RANGE
    ys, cs, y0 = (1.0 / 255.0, 1.0 / 255.0, 0.0) if full else (1.0 / 219.0, 1.0 / 224.0, 16.0)
    # Rows: R, G, B as combinations of Y' and the colour differences Pb, Pr.
    rows = np.array(
        [
            [1.0, 0.0, 2.0 * (1.0 - kr)],
            [1.0, -2.0 * kb * (1.0 - kb) / kg, -2.0 * kr * (1.0 - kr) / kg],
            [1.0, 2.0 * (1.0 - kb), 0.0],
        ]
    )
    m = rows * np.array([ys, cs, cs]) * 255.0
    offset = -(m @ np.array([y0, 128.0, 128.0]))
    return np.hstack([m, offset[:, None]]).astype(np.float32)


def small_rgb(frame: Any, size: tuple[int, int]) -> RGBFrame:
    """A yuv420p frame resized to ``size`` and converted to RGB, resizing the planes first.

    Bilinear, without anti-aliasing, like MediaPipe's own input resampling: the selfie model
    measurably prefers that to an area-averaged (softer) input.
    """
    planes = [plane_array(frame.planes[i]) for i in range(3)]
    yuv = cv2.merge([cv2.resize(p, size, interpolation=cv2.INTER_LINEAR) for p in planes])
    m = yuv_to_rgb_matrix(frame.colorspace, frame.color_range)
    rgb = cv2.transform(yuv.astype(np.float32), m)
    return np.clip(rgb, 0.0, 255.0).astype(np.uint8)


def plane_array(plane: Any) -> U8:
    """A height x width view of one frame plane (rows may be padded to ``line_size``)."""
    buf = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : plane.width]


def _new_frame(src: Any, pix_fmt: str) -> Any:
    frame = av.VideoFrame(src.width, src.height, pix_fmt)
    frame.pts = src.pts
    if src.time_base is not None:
        frame.time_base = src.time_base
    frame.colorspace, frame.color_range = src.colorspace, src.color_range
    return frame


def yuva_frame(src: Any, alpha: Alpha8) -> Any:
    """``src`` (yuv420p) with ``alpha`` added as its fourth plane (yuva420p)."""
    out = _new_frame(src, "yuva420p")
    for i in range(3):
        plane_array(out.planes[i])[...] = plane_array(src.planes[i])
    plane_array(out.planes[3])[...] = alpha
    return out


def yuv_over_colour(src: Any, alpha: Alpha8, yuv: tuple[int, ...]) -> Any:
    """``src`` (yuv420p) over a solid colour given as (Y, U, V) code values."""
    out = _new_frame(src, "yuv420p")
    _blend(plane_array(src.planes[0]), alpha, yuv[0], plane_array(out.planes[0]))
    cw, ch = out.planes[1].width, out.planes[1].height
    small = np.asarray(cv2.resize(alpha, (cw, ch), interpolation=cv2.INTER_AREA), np.uint8)
    for i in (1, 2):
        _blend(plane_array(src.planes[i]), small, yuv[i], plane_array(out.planes[i]))
    return out
