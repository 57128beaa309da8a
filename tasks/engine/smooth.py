"""Temporal smoothing of the matte, so a still subject's edge does not flicker."""

from __future__ import annotations

import numpy as np

from tasks.engine.segment import Matte


class EmaSmoother:
    """Exponential moving average: ``out = w * new + (1 - w) * previous``.

    ``weight`` 1.0 turns smoothing off; lower values trade lag on moving edges for stability.
    """

    def __init__(self, weight: float = 0.6) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError("smoothing weight must be in (0, 1]")
        self.weight = np.float32(weight)
        self._state: Matte | None = None

    def __call__(self, matte: Matte) -> Matte:
        if self._state is None or self._state.shape != matte.shape:
            self._state = matte.astype(np.float32, copy=True)
        else:
            self._state = self.weight * matte + (1.0 - self.weight) * self._state
        return self._state
