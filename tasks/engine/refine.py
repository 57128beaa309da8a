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

from tasks.engine.segment import Matte, clean_matte

Gray = npt.NDArray[np.uint8]
Alpha8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

WORK_MAX_SIDE = 400  # size at which the filter's coefficients are fitted


def upscale_alpha(matte: Matte, width: int, height: int) -> Alpha8:
    """Plain bilinear upscale to 8-bit alpha (what refinement improves on)."""
    if matte.shape[:2] != (height, width):
        matte = np.asarray(cv2.resize(matte, (width, height), interpolation=cv2.INTER_LINEAR))
    return np.asarray(cv2.convertScaleAbs(matte, alpha=255.0), dtype=np.uint8)


class EdgeRefiner:
    """Fast guided filter from a coarse matte and a full-size grey guide to 8-bit alpha.

    ``radius`` is the window radius in pixels at the fitting size (at most 400 wide); by default
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
        self._bufs: list[F32] | None = None

    def work_size(self, width: int, height: int, matte_shape: tuple[int, int]) -> tuple[int, int]:
        """The fitting size: the frame shrunk to ``work_max_side``, never below the matte."""
        side = max(self.work_max_side, *matte_shape)
        scale = min(1.0, side / max(width, height))
        return max(8, round(width * scale)), max(8, round(height * scale))

    def __call__(self, matte: Matte, guide: Gray) -> Alpha8:
        height, width = guide.shape[:2]
        if self.gain != 1.0:
            matte = clean_matte((matte - np.float32(0.5)) * self.gain + np.float32(0.5))
        if matte.shape[:2] == (height, width):
            return upscale_alpha(matte, width, height)  # already at full size: nothing to add
        ww, wh = self.work_size(width, height, (int(matte.shape[0]), int(matte.shape[1])))
        i_lo = np.asarray(cv2.resize(guide, (ww, wh), interpolation=cv2.INTER_AREA), np.float32)
        i_lo *= np.float32(1.0 / 255.0)
        p_lo = clean_matte(cv2.resize(matte, (ww, wh), interpolation=cv2.INTER_LINEAR))
        r = self.radius or max(1, int(max(ww / matte.shape[1], wh / matte.shape[0])))
        k = (2 * r + 1, 2 * r + 1)
        # The four window means in one multi-channel box filter.
        means = cv2.blur(cv2.merge([i_lo, p_lo, i_lo * p_lo, i_lo * i_lo]), k)
        mean_i, mean_p, mean_ip, mean_ii = cv2.split(means)
        a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + self.eps)
        b = mean_p - a * mean_i
        # alpha8 = A * luma + B: fold the 1/255 of the guide and the 255 of the output in.
        mean_a = cv2.blur(a, k)
        mean_b = cv2.blur(b, k) * np.float32(255.0)
        big_a, big_b, q = self._buffers(height, width)  # reused: fresh pages cost page faults
        cv2.resize(mean_a, (width, height), dst=big_a, interpolation=cv2.INTER_LINEAR)
        cv2.resize(mean_b, (width, height), dst=big_b, interpolation=cv2.INTER_LINEAR)
        cv2.multiply(guide, big_a, dst=q, dtype=cv2.CV_32F)
        return np.asarray(cv2.add(q, big_b, dtype=cv2.CV_8U), np.uint8)  # rounds, saturates

    def _buffers(self, height: int, width: int) -> list[F32]:
        if self._bufs is None or self._bufs[0].shape != (height, width):
            self._bufs = [np.empty((height, width), np.float32) for _ in range(3)]
        return self._bufs
