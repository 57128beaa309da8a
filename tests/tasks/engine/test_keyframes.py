"""Slow models run on keyframes only; optical flow carries the matte between them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine.general import model_size
from tasks.engine.pipeline import remove_background
from tasks.media.quality import matte_quality
from tests.tasks.engine.support import CoarseNoisyTruth, Ellipse, moving_disc


class CountingEllipse(Ellipse):
    keyframe_interval = 3

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.calls += 1
        return super().__call__(rgb)


class KeyframeTruth(CoarseNoisyTruth):
    """The degraded truth, asked for on keyframes only: ``i`` follows the video's frames."""

    keyframe_interval = 3

    def __init__(self, truth: Path, frames: list[int]) -> None:
        super().__init__(truth, noise=0.0)
        self.asked = frames

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.asked.append(self.i)
        out = super().__call__(rgb)
        self.i += self.keyframe_interval - 1  # the next call is three frames later
        return out


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return moving_disc(tmp_path_factory.mktemp("disc"), step=2.5)


@pytest.mark.parametrize("temporal", [{}, {"temporal": "ema"}, {"smoothing": 1.0}])
def test_the_model_runs_on_every_third_frame(
    clips: dict[str, Path], tmp_path: Path, temporal: dict[str, object]
) -> None:
    seg = CountingEllipse()
    result = remove_background(
        clips["person"], tmp_path / "o.webm", LocalOptions(**temporal), segmenter=seg
    )  # type: ignore[arg-type]
    assert result.frames == 8
    assert seg.calls == 3  # frames 0, 3 and 6


def test_the_carried_matte_follows_the_subject(disc: tuple[Path, Path], tmp_path: Path) -> None:
    clip, truth = disc
    opts = LocalOptions(output_format="mov_proresks", smoothing=1.0, refine_edges=False)
    every = tmp_path / "every.mov"
    remove_background(clip, every, opts, segmenter=CoarseNoisyTruth(truth, noise=0.0))
    asked: list[int] = []
    carried = tmp_path / "carried.mov"
    remove_background(clip, carried, opts, segmenter=KeyframeTruth(truth, asked))
    assert asked[:3] == [0, 3, 6]
    per_frame, flowed = matte_quality(every, truth)["MAD"], matte_quality(carried, truth)["MAD"]
    # The disc moves 2.5 px a frame: a matte held still for two frames would be off by up to
    # 5 px on its edge. Carried along the flow it stays close to the per-frame matte.
    assert flowed < 1.5 * per_frame


def test_model_size_keeps_the_shape_in_multiples_of_32() -> None:
    assert model_size(640, 480, 192) == (192, 160)
    assert model_size(1280, 720, 192) == (192, 96)
    assert model_size(480, 640, 192) == (160, 192)
    assert model_size(100, 20, 192) == (192, 32)
