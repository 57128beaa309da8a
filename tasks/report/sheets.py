"""Contact sheets: a few frames of a job, input | matte on a checkerboard | result over a colour.

Light on CPU: frames are decoded from the first ``MAX_DECODE`` frames only, scaled down at
once, and the sheet is a small JPEG. Inputs and outputs are read through fsspec, so s3:// and
http(s) work as local files do (an http input is read from its start, not downloaded whole).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import av
import fsspec
import numpy as np
import numpy.typing as npt
from PIL import Image

from tasks.media.probe import decoder_for, pix_fmt_has_alpha

Frame = npt.NDArray[np.uint8]
FRAMES = 3  # frames per sheet
TILE_HEIGHT = 96  # pixels; the width follows the video's aspect ratio
MAX_DECODE = 240  # frames decoded at most per video (about 8-10 s of a 24-30 fps video)
CHECKER = 8  # checkerboard square, pixels
OVER = (42, 157, 143)  # the colour results are shown over
GAP = 2
TOLERANCE = 24  # per channel: a pixel this close to an opaque output's background is background


@contextmanager
def _opened(url: str, options: dict[str, Any] | None) -> Iterator[Any]:
    with fsspec.open(url, "rb", **(options or {})) as fh, av.open(fh) as container:
        yield container


def sample_frames(url: str, options: dict[str, Any] | None = None) -> list[Frame]:
    """Up to ``FRAMES`` RGBA frames spread over the first ``MAX_DECODE``, ``TILE_HEIGHT`` high.

    Alpha is kept where the stream has it (VP9 through libvpx-vp9, ProRes 4444, ...), else 255.
    """
    kept: list[Frame] = []
    with _opened(url, options) as container:
        stream = container.streams.video[0]
        total = min(int(stream.frames or MAX_DECODE), MAX_DECODE)
        wanted = {int(total * (k + 0.5) / FRAMES) for k in range(FRAMES)}
        decoder = decoder_for(stream)
        index = 0
        last: Frame | None = None
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                if index in wanted or last is None:
                    last = _small(frame)
                    if index in wanted:
                        kept.append(last)
                index += 1
                if len(kept) >= FRAMES or index >= MAX_DECODE:
                    return kept
    if not kept and last is not None:
        kept.append(last)
    return kept


def _small(frame: Any) -> Frame:
    width = max(2, round(frame.width * TILE_HEIGHT / max(frame.height, 1)))
    fmt = "rgba" if pix_fmt_has_alpha(frame.format.name) else "rgb24"
    pixels = frame.reformat(width=width, height=TILE_HEIGHT, format=fmt).to_ndarray()
    if fmt == "rgb24":
        alpha = np.full((*pixels.shape[:2], 1), 255, np.uint8)
        pixels = np.concatenate([pixels, alpha], axis=2)
    return np.asarray(pixels, dtype=np.uint8)


def background_distance_matte(rgba: Frame) -> Frame:
    """An opaque output's matte: 255 where a pixel differs from its background colour, taken
    as the median of the tile's border (outputs over a solid colour have it at their edges)."""
    rgb = rgba[..., :3].astype(np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    dist = np.abs(rgb - background).max(axis=-1)
    return np.where(dist > TOLERANCE, 255, 0).astype(np.uint8)


def checkerboard(height: int, width: int) -> Frame:
    y, x = np.indices((height, width))
    light = ((y // CHECKER + x // CHECKER) % 2).astype(bool)
    board = np.where(light[..., None], 204, 153).astype(np.uint8)
    return np.repeat(board, 3, axis=2)


def over(rgba: Frame, background: Frame) -> Frame:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    mixed = rgba[..., :3].astype(np.float32) * alpha + background.astype(np.float32) * (1 - alpha)
    return np.asarray(mixed.round(), dtype=np.uint8)


def _fit(frame: Frame, width: int) -> Frame:
    """A frame at the sheet's tile width (inputs and outputs may differ in size)."""
    if frame.shape[1] == width:
        return frame
    image = Image.fromarray(frame, "RGBA").resize((width, TILE_HEIGHT))
    return np.asarray(image, dtype=np.uint8)


def sheet_tiles(
    inputs: list[Frame], outputs: list[Frame], matte: list[Frame] | None = None
) -> list[list[Frame]]:
    """One line of RGB tiles per frame: input | matte on a checkerboard | result over a colour.

    ``matte`` (a grey mask video's frames) stands in for alpha when the output has none.
    """
    lines: list[list[Frame]] = []
    for i in range(max(len(inputs), len(outputs))):
        line: list[Frame] = []
        width = (outputs or inputs)[min(i, len(outputs or inputs) - 1)].shape[1]
        if inputs:
            line.append(_fit(inputs[min(i, len(inputs) - 1)], width)[..., :3])
        if outputs:
            out = _fit(outputs[min(i, len(outputs) - 1)], width)
            opaque = bool((out[..., 3] == 255).all())
            if matte:
                alpha = _fit(matte[min(i, len(matte) - 1)], width)[..., 0]
            elif opaque:  # composited over a solid colour: the matte is what differs from it
                alpha = background_distance_matte(out)
            else:
                alpha = out[..., 3]
            white = np.repeat(alpha[..., None], 3, axis=2)
            cutout = np.concatenate([white, alpha[..., None]], axis=2)
            line.append(over(cutout, checkerboard(TILE_HEIGHT, width)))
            colour = np.broadcast_to(np.array(OVER, np.uint8), (TILE_HEIGHT, width, 3))
            shown = out if opaque else out.copy()
            if not opaque and matte:
                shown[..., 3] = alpha
            line.append(over(shown, colour))
        lines.append(line)
    return lines


def contact_sheet(
    input_url: str | None,
    output_url: str | None,
    *,
    mask_url: str | None = None,
    input_options: dict[str, Any] | None = None,
    output_options: dict[str, Any] | None = None,
) -> bytes | None:
    """A JPEG contact sheet of a job; None when neither video gives a frame.

    An unreadable side is left out (a failed row often has only its input).
    """
    inputs = _try(input_url, input_options)
    outputs = _try(output_url, output_options)
    matte = _try(mask_url, output_options) if mask_url else None
    lines = sheet_tiles(inputs, outputs, matte)
    if not lines or not lines[0]:
        return None
    rows = [np.concatenate(_spaced(line, axis=1), axis=1) for line in lines]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = np.concatenate(_spaced(rows, axis=0), axis=0)
    buf = io.BytesIO()
    Image.fromarray(sheet, "RGB").save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def _spaced(tiles: list[Frame], axis: int) -> list[Frame]:
    """``tiles`` with a white gap between each two."""
    out: list[Frame] = []
    for tile in tiles:
        if out:
            shape = list(tile.shape)
            shape[axis] = GAP
            out.append(np.full(shape, 255, np.uint8))
        out.append(tile)
    return out


def _try(url: str | None, options: dict[str, Any] | None) -> list[Frame]:
    if not url:
        return []
    try:
        return sample_frames(url, options)
    except (OSError, ValueError, IndexError, av.FFmpegError):
        return []
