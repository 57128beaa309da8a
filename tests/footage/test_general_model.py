"""The general model (U²-Net-p) on the product clips, judged by numbers, not by time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine import general
from tasks.engine.pipeline import remove_background
from tasks.media.probe import probe

pytestmark = [pytest.mark.footage, pytest.mark.slow]


@pytest.fixture(scope="module")
def u2netp() -> Path:
    path = general.models_dir() / general.U2NETP_FILE
    if not path.is_file():
        pytest.skip(f"no {path}: run `make models`")
    return path


def test_box_is_cut_out_not_erased_nor_kept_whole(
    footage: Path, u2netp: Path, tmp_path: Path
) -> None:
    out = tmp_path / "box.webm"
    result = remove_background(footage / "box.mp4", out, LocalOptions(model="general"))  # type: ignore[arg-type]
    found = probe(out)
    assert result.frames == 456
    # The box fills about a sixth of the frame (hand and table are background).
    assert found.fg_fraction is not None and 0.08 < found.fg_fraction < 0.35


def test_keyframes_and_flow_flicker_no_more_than_per_frame_output(
    footage: Path, u2netp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = footage / "cup.mp4"
    default = tmp_path / "default.webm"
    remove_background(src, default, LocalOptions(model="general"))  # type: ignore[arg-type]
    monkeypatch.setattr(general.GeneralSegmenter, "keyframe_interval", 1)
    per_frame = tmp_path / "per_frame.webm"
    remove_background(src, per_frame, LocalOptions(model="general", smoothing=1.0))  # type: ignore[arg-type]
    ours, theirs = probe(default), probe(per_frame)
    assert ours.fg_fraction is not None and theirs.fg_fraction is not None
    assert 0.03 < ours.fg_fraction < 0.35  # a cup in a hand
    assert abs(ours.fg_fraction - theirs.fg_fraction) < 0.03  # carrying loses no object
    assert ours.flicker is not None and theirs.flicker is not None
    assert ours.flicker <= theirs.flicker
