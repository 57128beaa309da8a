"""The ONNX engine on tiny models with BiRefNet's and RobustVideoMatting's interfaces."""

from __future__ import annotations

import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.engine.models import build_segmenter
from tasks.engine.onnx_engine import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OnnxImageSegmenter,
    OnnxRecurrentSegmenter,
    open_session,
)
from tasks.engine.pipeline import remove_background
from tasks.engine.segment import MissingExtra, ModelError
from tasks.media.quality import alpha_frames
from tests.tasks.engine.support import (
    rgb_frames,
    tiny_image_model,
    tiny_recurrent_model,
    write_clip,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "image": tiny_image_model(d / "image.onnx"),
        "image_dynamic": tiny_image_model(d / "image_dyn.onnx", side=None),
        "recurrent": tiny_recurrent_model(d / "rvm.onnx"),
    }


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """White left half, black right half: an image model's matte must follow it."""
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = 255
    return write_clip(tmp_path_factory.mktemp("halves") / "halves.mp4", [frame] * 4)


def onnx_options(url: str, kind: str, **kw: object) -> LocalOptions:
    return LocalOptions(model="onnx", onnx_model_url=url, onnx_kind=kind, **kw)  # type: ignore[arg-type]


def test_image_model_static_size_follows_the_image(
    models: dict[str, Path], halves: Path, tmp_path: Path
) -> None:
    seg = build_segmenter(onnx_options(str(models["image"]), "image"))
    assert isinstance(seg, OnnxImageSegmenter)
    assert seg.input_size(64, 48) == (32, 32)  # the model's fixed input wins
    out = tmp_path / "out.webm"
    result = remove_background(halves, out, onnx_options(str(models["image"]), "image"))
    assert result.frames == 4
    for a in alpha_frames(out):
        assert a[:, :24].mean() > 0.95  # white, normalised, times 8: a large positive logit
        assert a[:, 40:].mean() < 0.05


def test_image_model_dynamic_size_uses_the_option(models: dict[str, Path]) -> None:
    opts = onnx_options(str(models["image_dynamic"]), "image", onnx_input_side=48)
    seg = build_segmenter(opts)
    assert seg.input_size(640, 360) == (48, 48)  # type: ignore[attr-defined]
    m = seg(np.full((48, 48, 3), 255, np.uint8))
    assert m.shape == (48, 48) and m.min() > 0.99
    default = build_segmenter(onnx_options(str(models["image_dynamic"]), "image"))
    assert default.input_size(640, 360) == (1024, 1024)  # type: ignore[attr-defined]


def test_image_model_decides_logits_once(models: dict[str, Path]) -> None:
    seg = OnnxImageSegmenter(open_session(str(models["image"])))
    assert abs(float(seg(np.full((32, 32, 3), 255, np.uint8)).mean()) - 1.0) < 1e-3
    # A grey whose logit falls inside [0, 1] is still read as a logit after frame one.
    logit = 8.0 * float(np.mean((118 / 255.0 - IMAGENET_MEAN) / IMAGENET_STD))
    assert 0.0 < logit < 1.0
    got = float(seg(np.full((32, 32, 3), 118, np.uint8)).mean())
    assert got == pytest.approx(1.0 / (1.0 + np.exp(-logit)), abs=1e-4)


def test_recurrent_model_carries_state(
    models: dict[str, Path], clips: dict[str, Path], tmp_path: Path
) -> None:
    opts = onnx_options(str(models["recurrent"]), "recurrent", smoothing=1.0)
    seg = build_segmenter(opts)
    assert isinstance(seg, OnnxRecurrentSegmenter)
    frames = rgb_frames(clips["silent"])
    greys = [f.astype(np.float32).mean(axis=2) / 255.0 for f in frames]
    expected, state = [], np.zeros_like(greys[0])
    for g in greys:
        state = 0.5 * state + 0.5 * g
        expected.append(state)
    got = [seg(f) for f in frames]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)
    # Through the whole engine: the output alpha is the running average, not 0.5 * grey.
    out = tmp_path / "rvm.webm"
    result = remove_background(clips["silent"], out, opts)
    assert result.frames == len(frames)
    alphas = list(alpha_frames(out))
    again = tmp_path / "again.webm"  # the same model object for a second video starts afresh
    remove_background(clips["silent"], again, opts, segmenter=seg)
    assert abs(float(next(alpha_frames(again)).mean()) - float(expected[0].mean())) < 0.03
    for i, (a, e) in enumerate(zip(alphas, expected, strict=True)):
        assert abs(float(a.mean()) - float(e.mean())) < 0.03
        if i >= 3:
            assert abs(float(a.mean()) - 0.5 * float(greys[i].mean())) > 0.1


def test_recurrent_model_state_resets_per_video(models: dict[str, Path]) -> None:
    seg = OnnxRecurrentSegmenter(open_session(str(models["recurrent"])), downsample_ratio=0.5)
    white = np.full((8, 8, 3), 255, np.uint8)
    assert seg(white).mean() == pytest.approx(0.5)
    assert seg(white).mean() == pytest.approx(0.75)
    seg.reset()
    assert seg(white).mean() == pytest.approx(0.5)


def test_weights_from_an_fsspec_url(models: dict[str, Path]) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/weights/rvm.onnx", models["recurrent"].read_bytes())
    seg = build_segmenter(onnx_options("memory://weights/rvm.onnx", "recurrent"))
    assert isinstance(seg, OnnxRecurrentSegmenter)
    with pytest.raises(ModelError, match="cannot read ONNX weights"):
        build_segmenter(onnx_options("memory://weights/missing.onnx", "recurrent"))


def test_wrong_models_are_refused_clearly(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing inputs/outputs"):
        build_segmenter(onnx_options(str(models["image"]), "recurrent"))
    with pytest.raises(ModelError, match="one 1x3xHxW input"):
        build_segmenter(onnx_options(str(models["recurrent"]), "image"))
    with pytest.raises(ModelError, match="not found"):
        build_segmenter(onnx_options(str(tmp_path / "nope.onnx"), "image"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        build_segmenter(onnx_options(str(junk), "image"))


def test_missing_extra_names_it(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(MissingExtra, match=r"matteflow\[onnx\]") as err:
        build_segmenter(onnx_options(str(models["image"]), "image"))
    assert err.value.code == "missing_extra"


def test_onnx_options_are_validated() -> None:
    with pytest.raises(ValueError, match="needs onnx_model_url"):
        LocalOptions(model="onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only used with model=onnx"):
        LocalOptions(onnx_model_url="x.onnx")
