"""Turn an RGB frame and its matte into the output pixels: RGBA, or RGB over a solid colour."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tasks.engine.segment import Matte, RGBFrame

# GIF palette: a 6x7x6 colour cube (252 entries) plus one fully transparent entry.
GIF_TRANSPARENT_INDEX = 255
_LEVELS = (6, 7, 6)


def _gif_palette() -> npt.NDArray[np.uint8]:
    r, g, b = (np.linspace(0, 255, n).round().astype(np.uint8) for n in _LEVELS)
    cube = np.stack(np.meshgrid(r, g, b, indexing="ij"), axis=-1).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)  # ARGB rows, as PyAV's pal8 wants them
    palette[:, 0] = 255
    palette[: len(cube), 1:] = cube
    # FFmpeg's gif encoder treats the entry with the lowest alpha as the transparent one.
    palette[GIF_TRANSPARENT_INDEX, 0] = 0
    return palette


GIF_PALETTE = _gif_palette()


def to_rgba(rgb: RGBFrame, matte: Matte) -> npt.NDArray[np.uint8]:
    alpha = (matte * 255.0 + 0.5).astype(np.uint8)
    return np.dstack((rgb, alpha))


def over_colour(rgb: RGBFrame, matte: Matte, colour: tuple[int, int, int]) -> RGBFrame:
    a = matte[..., None]
    bg = np.asarray(colour, dtype=np.float32)
    out = rgb.astype(np.float32) * a + bg * (1.0 - a)
    return (out + 0.5).astype(np.uint8)


def to_gif_indices(rgb: RGBFrame, matte: Matte | None) -> npt.NDArray[np.uint8]:
    """Quantise to the fixed palette; pixels under half opacity become the transparent index."""
    idx = np.zeros(rgb.shape[:2], dtype=np.int32)
    for channel, levels in enumerate(_LEVELS):
        q = (rgb[..., channel].astype(np.int32) * (levels - 1) + 127) // 255
        idx = idx * levels + q
    out = idx.astype(np.uint8)
    if matte is not None:
        out[matte < 0.5] = GIF_TRANSPARENT_INDEX
    return out
