"""Person segmentation with the MediaPipe selfie model shipped inside the mediapipe wheel."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tasks.errors import MatteflowError

Matte = npt.NDArray[np.float32]  # HxW in [0, 1]
RGBFrame = npt.NDArray[np.uint8]  # HxWx3


class Segmenter(Protocol):
    """Anything that turns an RGB frame into a soft matte of the same size."""

    def __call__(self, rgb: RGBFrame) -> Matte: ...

    def close(self) -> None: ...


class MissingExtra(MatteflowError):
    code = "missing_extra"


class SelfieSegmenter:
    """MediaPipe's selfie segmentation (256x256 general model, or the 144x256 landscape one)."""

    def __init__(self, *, landscape: bool = False) -> None:
        try:
            from mediapipe.python.solutions import selfie_segmentation
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingExtra(
                "the local engine needs the 'local' extra: pip install 'matteflow[local]'"
            ) from exc
        self._model: Any = selfie_segmentation.SelfieSegmentation(
            model_selection=1 if landscape else 0
        )

    def __call__(self, rgb: RGBFrame) -> Matte:
        result = self._model.process(rgb)
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(rgb.shape[:2], dtype=np.float32)
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._model.close()

    def __enter__(self) -> SelfieSegmenter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
