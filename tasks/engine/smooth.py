"""Temporal smoothing of the matte, so still regions do not flicker and moving edges do not lag.

Both smoothers work at the segmenter's resolution (a few hundred pixels wide), where optical
flow costs well under a millisecond; the full-resolution edge comes later, from refinement.
"""

from __future__ import annotations

from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from tasks.engine.segment import Matte, clean_matte

Gray = npt.NDArray[np.uint8]

FLOW_MAX_SIDE = 320  # flow is estimated at most at this size, then scaled to the matte


def finest_scale(side: int) -> int:
    """DIS's finest pyramid level: keep it at least ~128 px wide, or small frames get no flow."""
    level = 0
    while level < 2 and side >> (level + 1) >= 128:
        level += 1
    return level


class Smoother(Protocol):
    """Blends each new matte with the past; ``gray`` is the frame as grey at any size."""

    def __call__(self, matte: Matte, gray: Gray) -> Matte: ...


def _check_weight(weight: float) -> np.float32:
    if not 0.0 < weight <= 1.0:
        raise ValueError("smoothing weight must be in (0, 1]")
    return np.float32(weight)


class EmaSmoother:
    """Exponential moving average: ``out = w * new + (1 - w) * previous``.

    ``weight`` 1.0 turns smoothing off; lower values trade lag on moving edges for stability.
    """

    def __init__(self, weight: float = 0.6) -> None:
        self.weight = _check_weight(weight)
        self._state: Matte | None = None

    def __call__(self, matte: Matte, gray: Gray | None = None) -> Matte:
        if self._state is None or self._state.shape != matte.shape:
            self._state = matte.astype(np.float32, copy=True)
        else:
            self._state = clean_matte(self.weight * matte + (1.0 - self.weight) * self._state)
        return self._state


class FlowSmoother:
    """Motion-compensated, confidence-weighted average of the matte over time.

    The previous output is warped along dense optical flow (OpenCV's DIS) onto the current
    frame, then blended with the new matte. Where the warp explains the image well, the new
    matte gets ``weight`` (steady: no flicker, and no lag, since the past moved with the
    subject); where it does not (occlusions, flow failures) the new matte wins outright.
    """

    def __init__(self, weight: float = 0.2, *, tolerance: float = 12.0) -> None:
        self.weight = _check_weight(weight)
        self.tolerance = np.float32(tolerance)  # grey levels of warp error that halve trust
        self._flow: Any = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._finest: int | None = None
        self._prev_gray: Gray | None = None
        self._state: Matte | None = None
        self._grid: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None

    @staticmethod
    def _flow_gray(gray: Gray) -> Gray:
        """The grey frame at most ``FLOW_MAX_SIDE`` wide: flow beyond that costs, adds little."""
        h, w = gray.shape[:2]
        scale = FLOW_MAX_SIDE / max(h, w)
        if scale < 1.0:
            size = (max(8, round(w * scale)), max(8, round(h * scale)))
            gray = np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), np.uint8)
        return np.ascontiguousarray(gray)

    def _remap_grid(
        self, shape: tuple[int, int]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        if self._grid is None or self._grid[0].shape != shape:
            ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
            self._grid = (xs, ys)
        return self._grid

    def __call__(self, matte: Matte, gray: Gray) -> Matte:
        matte = np.asarray(matte, dtype=np.float32)
        warp = self._warp(gray, (int(matte.shape[0]), int(matte.shape[1])))
        if warp is None:
            self._state = matte.copy()
            return self._state
        warped, err = warp
        # Trust in the warped past falls off with the photometric error of the warp.
        trust = self.tolerance / (self.tolerance + err)
        w_new = 1.0 - (1.0 - self.weight) * trust
        self._state = clean_matte(warped + w_new * (matte - warped))
        return self._state

    def carry(self, gray: Gray) -> Matte | None:
        """The last matte moved along the flow onto this frame, for frames the model skips.

        None when there is nothing to carry (first frame, a size change): run the model then.
        """
        if self._state is None:
            return None
        warp = self._warp(gray, (int(self._state.shape[0]), int(self._state.shape[1])))
        if warp is None:
            return None
        self._state = clean_matte(warp[0])
        return self._state

    def _warp(
        self, gray: Gray, shape: tuple[int, int]
    ) -> tuple[Matte, npt.NDArray[np.float32]] | None:
        """The previous output warped onto ``gray``'s frame, and the warp's photometric error."""
        small = self._flow_gray(gray)
        prev, state, self._prev_gray = self._prev_gray, self._state, small
        if prev is None or state is None or state.shape != shape or prev.shape != small.shape:
            return None
        finest = finest_scale(max(small.shape[:2]))
        if finest != self._finest:
            self._flow.setFinestScale(finest)
            self._finest = finest
        # Flow from the current frame back to the previous one: where each pixel came from.
        flow = self._flow.calc(small, prev, None)
        xs, ys = self._remap_grid((int(small.shape[0]), int(small.shape[1])))
        mx, my = xs + flow[..., 0], ys + flow[..., 1]
        warped_gray = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err = np.asarray(cv2.blur(cv2.absdiff(small, warped_gray).astype(np.float32), (5, 5)))
        if small.shape != shape:
            sy, sx = shape[0] / small.shape[0], shape[1] / small.shape[1]
            size = (shape[1], shape[0])
            flow = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= sx
            flow[..., 1] *= sy
            err = np.asarray(cv2.resize(err, size, interpolation=cv2.INTER_LINEAR))
            xs, ys = self._remap_grid(shape)
            mx, my = xs + flow[..., 0], ys + flow[..., 1]
        warped = cv2.remap(state, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.asarray(warped, np.float32), np.asarray(err, np.float32)


def make_smoother(kind: str, weight: float) -> Smoother | None:
    """``flow`` or ``ema``; None when ``weight`` is 1.0 (the newest matte only)."""
    if weight >= 1.0:
        return None
    if kind == "ema":
        return EmaSmoother(weight)
    if kind == "flow":
        return FlowSmoother(weight)
    raise ValueError(f"unknown temporal filter {kind!r} (use flow or ema)")
