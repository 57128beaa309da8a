"""Fast guided filter: a coarse matte comes out with edges on the image's edges."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tasks.engine.refine import EdgeRefiner, upscale_alpha
from tests.tasks.engine.support import grad_error


def disc_scene(h: int = 180, w: int = 320) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    alpha = np.clip(50.5 - np.sqrt((xs - 150) ** 2 + (ys - 90) ** 2), 0, 1).astype(np.float32)
    rng = np.random.default_rng(5)
    bg = cv2.GaussianBlur(rng.uniform(0, 80, (h, w)).astype(np.float32), (0, 0), 2)
    fg = cv2.GaussianBlur(rng.uniform(170, 255, (h, w)).astype(np.float32), (0, 0), 2)
    grey = (fg * alpha + bg * (1 - alpha) + 0.5).astype(np.uint8)
    return grey, alpha


def test_refined_edges_beat_plain_upscaling() -> None:
    grey, alpha = disc_scene()
    coarse = cv2.resize(alpha, (64, 36), interpolation=cv2.INTER_AREA)  # a 5x coarser model
    plain = upscale_alpha(coarse, 320, 180).astype(np.float32) / 255.0
    refined = EdgeRefiner()(coarse, grey).astype(np.float32) / 255.0
    assert refined.shape == alpha.shape
    assert grad_error(refined, alpha) < 0.5 * grad_error(plain, alpha)
    assert np.abs(refined - alpha).mean() <= np.abs(plain - alpha).mean()
    steep = EdgeRefiner(gain=2.0)(coarse, grey).astype(np.float32) / 255.0
    assert np.abs(steep - alpha).mean() < 0.9 * np.abs(plain - alpha).mean()


def test_gain_steepens_a_soft_matte() -> None:
    grey, alpha = disc_scene()
    soft = cv2.GaussianBlur(cv2.resize(alpha, (64, 36), interpolation=cv2.INTER_AREA), (0, 0), 2)
    err = {g: np.abs(EdgeRefiner(gain=g)(soft, grey) / 255.0 - alpha).mean() for g in (1.0, 2.0)}
    assert err[2.0] < err[1.0]


def test_full_size_matte_is_only_quantised() -> None:
    grey, alpha = disc_scene()
    out = EdgeRefiner()(alpha, grey)
    np.testing.assert_array_equal(out, (alpha * 255 + 0.5).astype(np.uint8))


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        EdgeRefiner(radius=0)
    with pytest.raises(ValueError):
        EdgeRefiner(eps=0.0)
