"""The engine end to end on generated clips: quality over per-frame output, formats, errors."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tasks.endpoints.local import LocalOptions
from tasks.endpoints.options import RemovalOptions
from tasks.engine.pipeline import EngineSettings, remove_background
from tasks.engine.segment import ModelError, SelfieSegmenter
from tasks.errors import InputError
from tasks.media.formats import spec_for
from tasks.media.quality import alpha_frames, matte_quality
from tasks.media.samples import make_composite_clip
from tasks.media.verify import probe
from tests.tasks.engine.support import (
    CoarseNoisyTruth,
    Ellipse,
    mean_alpha_change,
    moving_disc,
    verify_like,
    video_grad_error,
)

PER_FRAME = dict(smoothing=1.0, refine_edges=False)


@pytest.fixture(scope="module")
def composite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """samples.make_composite_clip: a cut-out moving over a scrolling wall, with its alpha."""
    d = tmp_path_factory.mktemp("composite")
    clip = make_composite_clip(d / "c.mp4", d / "a.mkv", width=480, height=270, seconds=1.6, fps=20)
    return clip, d / "a.mkv"


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return moving_disc(tmp_path_factory.mktemp("disc"))


def scores(src: Path, truth: Path, out: Path, opts: LocalOptions, **kw: Any) -> dict[str, float]:
    remove_background(src, out, opts, **kw)
    q = matte_quality(out, truth)
    return {"MAD": q["MAD"], "dtSSD": q["dtSSD"], "Grad": video_grad_error(out, truth)}


def test_selfie_engine_beats_per_frame_output_on_a_composite(
    composite: tuple[Path, Path], tmp_path: Path
) -> None:
    """The real model on a moving composite: every metric improves over per-frame output."""
    clip, truth = composite
    per_frame = scores(clip, truth, tmp_path / "pf.webm", LocalOptions(**PER_FRAME))  # type: ignore[arg-type]
    flow = scores(clip, truth, tmp_path / "f.webm", LocalOptions(refine_edges=False))
    refined = scores(clip, truth, tmp_path / "r.webm", LocalOptions(smoothing=1.0))
    both = scores(clip, truth, tmp_path / "b.webm", LocalOptions())
    assert flow["dtSSD"] < 0.85 * per_frame["dtSSD"]  # temporal consistency
    assert refined["MAD"] < per_frame["MAD"] and refined["Grad"] < per_frame["Grad"]  # edges
    assert both["MAD"] < 0.9 * per_frame["MAD"]
    assert both["dtSSD"] < 0.85 * per_frame["dtSSD"]
    assert both["Grad"] < per_frame["Grad"]


def test_refinement_makes_edges_follow_the_image(disc: tuple[Path, Path], tmp_path: Path) -> None:
    clip, truth = disc
    plain = scores(
        clip,
        truth,
        tmp_path / "p.mov",
        LocalOptions(output_format="mov_proresks", **PER_FRAME),
        segmenter=CoarseNoisyTruth(truth, noise=0.0),
    )  # type: ignore[arg-type]
    refined = scores(
        clip,
        truth,
        tmp_path / "r.mov",
        LocalOptions(output_format="mov_proresks", smoothing=1.0),
        segmenter=CoarseNoisyTruth(truth, noise=0.0),
    )  # type: ignore[arg-type]
    assert refined["MAD"] < plain["MAD"]
    assert refined["Grad"] < 0.85 * plain["Grad"]
    assert refined["dtSSD"] < 0.8 * plain["dtSSD"]  # a sharp edge moves like the true one


def test_flow_smoothing_steadies_still_regions_without_lag(
    disc: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, truth = disc
    truths = list(alpha_frames(truth))
    # Pixels whose true alpha never changes and sit away from the disc's path.
    still = np.all([t == truths[0] for t in truths], axis=0)
    still = cv2.erode(still.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    flicker, mad = {}, {}
    for name, kw in {
        "per_frame": PER_FRAME,
        "ema": dict(temporal="ema", smoothing=0.3, refine_edges=False),
        "flow": dict(temporal="flow", smoothing=0.3, refine_edges=False),
    }.items():
        opts = LocalOptions(output_format="mov_proresks", **kw)  # type: ignore[arg-type]
        noisy = tmp_path / f"{name}.mov"
        remove_background(clip, noisy, opts, segmenter=CoarseNoisyTruth(truth, noise=0.1))
        a = list(alpha_frames(noisy))
        flicker[name] = float(
            np.mean([np.abs(x - y)[still].mean() for x, y in zip(a[1:], a[:-1], strict=True)])
        )
        clean = tmp_path / f"{name}-clean.mov"
        mad[name] = scores(clip, truth, clean, opts, segmenter=CoarseNoisyTruth(truth, noise=0.0))[
            "MAD"
        ]
    assert flicker["flow"] < 0.6 * flicker["per_frame"]  # still regions stop flickering
    assert mad["flow"] < 0.8 * mad["ema"]  # the past moves with the subject instead of trailing


def test_selfie_model_flickers_less_with_smoothing(clips: dict[str, Path], tmp_path: Path) -> None:
    changes = {}
    for name, kw in {"per_frame": PER_FRAME, "default": {}}.items():
        out = tmp_path / f"{name}.webm"
        remove_background(clips["silent"], out, LocalOptions(**kw))  # type: ignore[arg-type]
        changes[name] = mean_alpha_change(out)
    assert changes["default"] < changes["per_frame"]


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(background="green"),
        dict(background="custom", background_color="10,20,200", output_format="mkv_vp9"),
        dict(output_format="mov_proresks"),
        dict(output_format="gif"),
        dict(background="white", output_format="mp4_h265"),
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()) or "default",
)
def test_every_format_verifies(
    options: dict[str, str], clips: dict[str, Path], tmp_path: Path
) -> None:
    opts = LocalOptions(**options)  # type: ignore[arg-type]
    spec = spec_for(opts.resolved_format)
    out = tmp_path / f"out{spec.extension}"
    result = remove_background(clips["person"], out, opts, segmenter=Ellipse())
    report = verify_like(out, spec, opts.transparent, result)
    assert report.ok, report.error
    assert result.frames == 8 and set(result.stage_s) >= {"decode", "matte", "encode"}
    assert result.has_audio is (spec.audio_codec is not None)
    if spec.audio_codec is not None:
        assert probe(out).has_audio


def test_solid_background_is_the_colour_outside_the_matte(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "green.mp4"
    remove_background(clips["silent"], out, RemovalOptions(background="green"), segmenter=Ellipse())  # type: ignore[arg-type]
    import av

    with av.open(str(out)) as c:
        rgb = next(iter(c.decode(video=0))).to_ndarray(format="rgb24").astype(int)
    corner = rgb[:6, :6].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - (0, 255, 0)).max() < 12
    centre = rgb[20:28, 28:36].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - (0, 255, 0)).max() > 60  # the subject, not the background


def test_segmenter_error_surfaces_and_stops_every_stage(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    class Broken(Ellipse):
        calls = 0

        def __call__(self, rgb: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
            self.calls += 1
            if self.calls == 3:
                raise ModelError("model fell over")
            return super().__call__(rgb)

    before = threading.active_count()
    with pytest.raises(ModelError, match="fell over"):
        remove_background(clips["person"], tmp_path / "x.webm", LocalOptions(), segmenter=Broken())
    assert threading.active_count() == before


def test_undecodable_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError) as err:
        remove_background(bad, tmp_path / "o.webm", LocalOptions(), segmenter=Ellipse())
    assert err.value.code == "input_undecodable"


def test_settings_come_from_local_options() -> None:
    opts = LocalOptions(smoothing=0.7, temporal="ema", refine_edges=False)  # type: ignore[arg-type]
    assert EngineSettings.from_options(opts) == EngineSettings(0.7, "ema", False)
    assert EngineSettings.from_options(opts, 1.0).smoothing == 1.0
    assert EngineSettings.from_options(RemovalOptions()) == EngineSettings()


def test_selfie_segmenter_takes_model_size_input() -> None:
    with SelfieSegmenter() as seg:
        assert seg.input_size(1920, 1080) == (256, 256)
        m = seg(np.zeros((256, 256, 3), np.uint8))
        assert m.shape == (256, 256) and m.dtype == np.float32
    with SelfieSegmenter(landscape=True) as seg:
        assert seg.input_size(1920, 1080) == (256, 144)


@pytest.mark.parametrize(("pix_fmt", "codec"), [("yuvj420p", "mjpeg"), ("yuv444p", "libx264")])
def test_other_pixel_formats_keep_their_colours(pix_fmt: str, codec: str, tmp_path: Path) -> None:
    import av

    rgb = np.zeros((48, 64, 3), np.uint8)  # dark and bright blocks: range errors show there
    rgb[:, :32], rgb[:, 32:] = (20, 40, 60), (230, 210, 190)
    src = tmp_path / "in.mkv"
    with av.open(str(src), "w") as out:
        s = out.add_stream(codec, rate=20)
        s.width, s.height, s.pix_fmt = 64, 48, pix_fmt
        for i in range(3):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    dst = tmp_path / "out.mp4"
    remove_background(src, dst, LocalOptions(background="green"), segmenter=Ellipse())  # type: ignore[arg-type]
    with av.open(str(dst)) as c:
        got = next(iter(c.decode(video=0))).to_ndarray(format="rgb24").astype(int)
    for cols in (slice(22, 28), slice(36, 42)):  # inside the ellipse: the input's own pixels
        assert np.abs(got[18:30, cols] - rgb[18:30, cols].astype(int)).mean() < 4
