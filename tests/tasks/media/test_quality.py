"""Matte metrics: Grad checked against OpenCV, and every metric against known alphas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.media.quality import gauss_derivative_1d, gauss_gradient, grad_error, matte_quality
from tests.tasks.engine.support import write_alpha


def _cv2_gradient(img: np.ndarray, sigma: float) -> np.ndarray:
    """The reference: a 2-D Gaussian-derivative filter applied with cv2.filter2D."""
    cv2 = pytest.importorskip("cv2")
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    fx = np.array([[gi * (-xj * gj / sigma**2) for xj, gj in zip(x, g, strict=True)] for gi in g])
    fx /= np.sqrt((fx**2).sum())
    gx = cv2.filter2D(img, -1, fx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(img, -1, fx.T, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def test_filter_for_sigma_1_4_has_nine_taps_and_unit_norm() -> None:
    g, dg = gauss_derivative_1d(1.4)
    assert len(g) == len(dg) == 9
    assert np.sqrt((np.outer(g, dg) ** 2).sum()) == pytest.approx(1.0)


def test_gradient_matches_opencv_filter2d() -> None:
    rng = np.random.default_rng(7)
    img = rng.random((37, 53)).astype(np.float32)
    img[10:30, 5:25] = 1.0
    ours = gauss_gradient(img, 1.4)
    ref = _cv2_gradient(img.astype(np.float64), 1.4)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def _disc(shift: int, blur: bool = False) -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:64]
    a = (((xx - 32 - shift) ** 2 + (yy - 24) ** 2) < 15**2).astype(np.float32)
    if blur:
        a = (a + np.roll(a, 1, 1) + np.roll(a, -1, 1) + np.roll(a, 1, 0) + np.roll(a, -1, 0)) / 5
    return a


def test_grad_error_is_zero_for_equal_mattes_and_grows_with_edge_error() -> None:
    truth = _disc(0)
    assert grad_error(truth, truth) == 0.0
    soft = grad_error(_disc(0, blur=True), truth)
    moved = grad_error(_disc(6), truth)
    assert 0.0 < soft < moved


def test_matte_quality_of_known_mattes(tmp_path: Path) -> None:
    truth = [_disc(i) for i in range(5)]
    same = matte_quality(
        write_alpha(tmp_path / "a.mkv", truth), write_alpha(tmp_path / "b.mkv", truth)
    )
    assert same == {"frames": 5, "MAD": 0.0, "MSE": 0.0, "Grad": 0.0, "dtSSD": 0.0}
    # A matte frozen on the first frame: wrong by the disc's motion, and temporally wrong.
    frozen = matte_quality(write_alpha(tmp_path / "c.mkv", [truth[0]] * 5), tmp_path / "b.mkv")
    diffs = [np.abs(truth[0] - t) for t in truth]
    assert frozen["MAD"] == pytest.approx(1e3 * np.mean([d.mean() for d in diffs]), abs=1e-3)
    assert frozen["MSE"] == pytest.approx(1e3 * np.mean([(d**2).mean() for d in diffs]), abs=1e-3)
    steps = [0.0] + [np.sqrt(((truth[i] - truth[i - 1]) ** 2).mean()) for i in range(1, 5)]
    assert frozen["dtSSD"] == pytest.approx(1e2 * np.mean(steps), abs=1e-3)
    assert frozen["Grad"] > 0


def test_matte_quality_refuses_misaligned_videos(tmp_path: Path) -> None:
    a = write_alpha(tmp_path / "a.mkv", [_disc(0)] * 4)
    b = write_alpha(tmp_path / "b.mkv", [_disc(0)] * 3)
    with pytest.raises(ValueError, match="1 more frames"):
        matte_quality(a, b)


def test_matte_quality_of_the_composite_clip_against_itself(clips: dict[str, Path]) -> None:
    result = matte_quality(clips["truth"], clips["truth"])
    assert result["frames"] == 12 and result["MAD"] == 0.0
