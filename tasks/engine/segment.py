"""Person segmentation: MediaPipe's selfie models, or user-supplied ONNX weights.

A segmenter turns an RGB frame into a soft matte. It may ask for its input at another size than
the video's (``input_size``, aspect not kept): the selfie model sees 256x256 anyway, so handing
it full HD only costs time. The matte may come back at any resolution; the pipeline refines it
up to the frame.
"""

from __future__ import annotations

from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from tasks.engine.closing import Closing
from tasks.errors import ErrorCode, MatteflowError

Matte = npt.NDArray[np.float32]  # HxW in [0, 1]
RGBFrame = npt.NDArray[np.uint8]  # HxWx3


class Segmenter(Protocol):
    """Anything that turns an RGB frame into a soft matte (at any resolution).

    Optional: ``input_size(width, height) -> (w, h)`` for the frame size it wants, and
    ``edge_gain`` (float) to steepen its soft edges before refinement.
    """

    def __call__(self, rgb: RGBFrame) -> Matte: ...

    def close(self) -> None: ...


class MissingExtra(MatteflowError):
    code = ErrorCode.missing_extra


class ModelError(MatteflowError):
    """User-supplied weights cannot be loaded or do not have the expected inputs/outputs."""

    code = ErrorCode.model_error


TINY = 1e-6  # mattes are cut to zero below this: denormal floats make every later pass crawl


def clean_matte(matte: npt.NDArray[Any]) -> Matte:
    """``matte`` as float32 in [0, 1], with values below ``TINY`` set to exactly 0.

    Sigmoid tails and decaying averages drift into denormal floats, which x86 handles ~100x
    slower; one thresholding pass keeps the filters downstream at full speed.
    """
    m = np.clip(np.asarray(matte, dtype=np.float32), 0.0, 1.0)
    return np.asarray(cv2.threshold(m, TINY, 0.0, cv2.THRESH_TOZERO)[1], dtype=np.float32)


def input_size(segmenter: Segmenter, width: int, height: int) -> tuple[int, int]:
    """The (width, height) ``segmenter`` wants its frames at; full size unless it says so."""
    wants = getattr(segmenter, "input_size", None)
    if callable(wants):
        w, h = wants(width, height)
        return int(w), int(h)
    return width, height


class SelfieSegmenter(Closing):
    """MediaPipe's selfie segmentation (256x256 general model, or the 144x256 landscape one).

    Frames are handed over at the model's own input size, so MediaPipe resamples nothing and
    returns the raw 256-pixel matte. That matte is soft at the edges: ``edge_gain`` tells the
    refinement to steepen it before fitting it to the image.
    """

    edge_gain = 2.0

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
        self._size = (256, 144) if landscape else (256, 256)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return self._size

    def __call__(self, rgb: RGBFrame) -> Matte:
        result = self._model.process(rgb)
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(rgb.shape[:2], dtype=np.float32)
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._model.close()
