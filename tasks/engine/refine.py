"""Bring a low-resolution matte up to the frame with a fast guided filter (He & Sun, 2015).

The filter fits, in every window, a linear model ``alpha = a * luma + b`` between the image and
the coarse matte; the coefficients are smooth, so they are fitted at a reduced size and only
upsampled and applied at full size. Edges then follow the image (hair, outlines) instead of the
model's 256-pixel grid, at the cost of a few full-size passes.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from tasks.engine.segment import Matte

Gray = npt.NDArray[np.uint8]
Alpha8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

WORK_MAX_SIDE = 640  # size at which the filter's coefficients are fitted


def upscale_alpha(matte: Matte, width: int, height: int) -> Alpha8:
    """Plain bilinear upscale to 8-bit alpha (what refinement improves on)."""
    if matte.shape[:2] != (height, width):
        matte = np.asarray(cv2.resize(matte, (width, height), interpolation=cv2.INTER_LINEAR))
    return np.asarray(cv2.convertScaleAbs(matte, alpha=255.0), dtype=np.uint8)


class EdgeRefiner:
    """Fast guided filter from a coarse matte and a full-size grey guide to 8-bit alpha.

    ``radius`` is the window radius in pixels at the fitting size (at most 640 wide); by default
    it is the matte's upscaling factor, so the window spans one coarse matte pixel. ``eps`` is
    the regularisation in (luma/255)^2: smaller values follow image edges more tightly.
    ``gain`` > 1 first steepens a soft matte around 0.5 (MediaPipe's is blurry at the edges).
    """

    def __init__(
        self,
        *,
        radius: int | None = None,
        eps: float = 1e-3,
        gain: float = 1.0,
        work_max_side: int = WORK_MAX_SIDE,
    ) -> None:
        if (radius is not None and radius < 1) or eps <= 0 or gain <= 0:
            raise ValueError("radius must be >= 1, eps and gain > 0")
        self.radius, self.eps, self.work_max_side = radius, np.float32(eps), work_max_side
        self.gain = np.float32(gain)

    def work_size(self, width: int, height: int, matte_shape: tuple[int, int]) -> tuple[int, int]:
        scale = min(1.0, self.work_max_side / max(width, height))
        w, h = max(8, round(width * scale)), max(8, round(height * scale))
        # Never fit below the matte's own resolution: that would throw detail away.
        if h < matte_shape[0] or w < matte_shape[1]:
            return width, height
        return w, h

    def __call__(self, matte: Matte, guide: Gray) -> Alpha8:
        height, width = guide.shape[:2]
        if self.gain != 1.0:
            matte = np.clip((matte - np.float32(0.5)) * self.gain + np.float32(0.5), 0.0, 1.0)
        if matte.shape[:2] == (height, width):
            return upscale_alpha(matte, width, height)  # already at full size: nothing to add
        ww, wh = self.work_size(width, height, (int(matte.shape[0]), int(matte.shape[1])))
        i_lo = np.asarray(cv2.resize(guide, (ww, wh), interpolation=cv2.INTER_AREA), np.float32)
        i_lo *= np.float32(1.0 / 255.0)
        p_lo = np.asarray(cv2.resize(matte, (ww, wh), interpolation=cv2.INTER_LINEAR))
        r = self.radius or max(1, round(max(ww / matte.shape[1], wh / matte.shape[0])))
        k = (2 * r + 1, 2 * r + 1)
        mean_i = cv2.blur(i_lo, k)
        mean_p = cv2.blur(p_lo, k)
        cov_ip = cv2.blur(i_lo * p_lo, k) - mean_i * mean_p
        var_i = cv2.blur(i_lo * i_lo, k) - mean_i * mean_i
        a = cov_ip / (var_i + self.eps)
        b = mean_p - a * mean_i
        # alpha8 = A * luma + B: fold the 1/255 of the guide and the 255 of the output in.
        mean_a = cv2.blur(a, k)
        mean_b = cv2.blur(b, k) * np.float32(255.0)
        big_a = cv2.resize(mean_a, (width, height), interpolation=cv2.INTER_LINEAR)
        big_b = cv2.resize(mean_b, (width, height), interpolation=cv2.INTER_LINEAR)
        q = cv2.multiply(guide, big_a, dtype=cv2.CV_32F)
        _, q = cv2.threshold(cv2.add(q, big_b), 0.0, 0.0, cv2.THRESH_TOZERO)  # negatives to 0
        return np.asarray(cv2.convertScaleAbs(q), dtype=np.uint8)  # rounds, saturates at 255
