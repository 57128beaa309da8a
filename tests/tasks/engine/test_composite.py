"""Pixel assembly: YUV colours, alpha planes, blends and the small RGB for the model."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from tasks.engine.composite import (
    over_colour,
    plane_array,
    small_rgb,
    to_gif_indices,
    to_rgba,
    yuv_colour,
    yuv_over_colour,
    yuv_to_rgb_matrix,
    yuva_frame,
)


def yuv_frame(w: int = 64, h: int = 48) -> av.VideoFrame:
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2)
    f = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
    f.pts = 7
    return f


@pytest.mark.parametrize(
    ("colour", "space", "rng", "expected"),
    [
        ((255, 255, 255), 2, 1, (235, 128, 128)),
        ((0, 0, 0), 2, 1, (16, 128, 128)),
        ((255, 255, 255), 1, 2, (255, 128, 128)),
        ((0, 255, 0), 5, 1, (145, 54, 34)),  # BT.601 limited green
        ((0, 255, 0), 1, 1, (173, 42, 26)),  # BT.709 limited green
    ],
)
def test_yuv_colour(
    colour: tuple[int, int, int], space: int, rng: int, expected: tuple[int, ...]
) -> None:
    assert yuv_colour(colour, space, rng) == expected


@pytest.mark.parametrize(("space", "rng"), [(2, 1), (1, 1), (1, 2)])
def test_yuv_to_rgb_inverts_yuv_colour(space: int, rng: int) -> None:
    m = yuv_to_rgb_matrix(space, rng)
    for colour in [(255, 0, 0), (12, 200, 40), (128, 128, 128)]:
        yuv = np.array(yuv_colour(colour, space, rng), np.float32)
        back = m[:, :3] @ yuv + m[:, 3]
        np.testing.assert_allclose(back, colour, atol=2.5)


def test_yuva_frame_adds_alpha_and_keeps_planes() -> None:
    src = yuv_frame()
    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    out = yuva_frame(src, alpha)
    assert out.format.name == "yuva420p" and out.pts == 7
    for i in range(3):
        np.testing.assert_array_equal(plane_array(out.planes[i]), plane_array(src.planes[i]))
    np.testing.assert_array_equal(plane_array(out.planes[3]), alpha)


def test_yuv_over_colour_blends_by_alpha() -> None:
    src = yuv_frame()
    alpha = np.zeros((48, 64), np.uint8)
    alpha[:, :32] = 255
    out = yuv_over_colour(src, alpha, (145, 54, 34))
    y = plane_array(out.planes[0])
    np.testing.assert_array_equal(y[:, :32], plane_array(src.planes[0])[:, :32])
    assert (y[:, 32:] == 145).all()
    assert (plane_array(out.planes[1])[:, 16:] == 54).all()
    rgb = out.to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb[:, 40:].reshape(-1, 3).mean(axis=0) - (0, 255, 0)).max() < 6


def test_rgb_blend_and_gif() -> None:
    rgb = np.full((4, 4, 3), 200, np.uint8)
    alpha = np.array([[0, 128, 255, 255]] * 4, np.uint8)
    out = over_colour(rgb, alpha, (0, 0, 100))
    assert tuple(out[0, 0]) == (0, 0, 100) and tuple(out[0, 3]) == (200, 200, 200)
    assert tuple(out[0, 1]) == (100, 100, 150)
    idx = to_gif_indices(rgb, alpha)
    assert idx[0, 0] == 255 and idx[0, 1] != 255


def test_small_rgb_matches_a_bilinear_resize() -> None:
    src = yuv_frame(128, 96)
    ours = small_rgb(src, (32, 32)).astype(int)
    ref = cv2.resize(src.to_ndarray(format="rgb24"), (32, 32), interpolation=cv2.INTER_LINEAR)
    assert ours.shape == (32, 32, 3)
    assert np.abs(ours - ref.astype(int)).mean() < 3.0


def test_float_mattes_still_work_where_8_bit_alpha_is_expected() -> None:
    rgb = np.full((2, 2, 3), 200, np.uint8)
    matte = np.array([[0.0, 1.0], [0.5, 0.2]], np.float32)
    assert over_colour(rgb, matte, (0, 0, 0)).dtype == np.uint8
    np.testing.assert_array_equal(
        over_colour(rgb, matte, (0, 0, 0)),
        over_colour(rgb, (matte * 255 + 0.5).astype(np.uint8), (0, 0, 0)),
    )
    assert to_rgba(rgb, matte)[..., 3].tolist() == [[0, 255], [128, 51]]
    assert to_gif_indices(rgb, matte)[0, 0] == 255
