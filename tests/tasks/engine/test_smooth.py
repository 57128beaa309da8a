"""Temporal smoothers on synthetic mattes: flicker goes, motion is followed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tasks.engine.smooth import EmaSmoother, FlowSmoother, finest_scale, make_smoother


def texture(h: int = 96, w: int = 128, seed: int = 1) -> np.ndarray:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0).astype(
        np.uint8
    )


def square(h: int, w: int, x: int) -> np.ndarray:  # type: ignore[type-arg]
    m = np.zeros((h, w), np.float32)
    m[30:70, x : x + 40] = 1.0
    return m


def test_ema_weights_and_reset_on_new_size() -> None:
    s = EmaSmoother(0.5)
    a = s(np.zeros((4, 4), np.float32))
    assert a.max() == 0.0
    assert s(np.ones((4, 4), np.float32)).mean() == pytest.approx(0.5)
    assert s(np.ones((2, 2), np.float32)).mean() == 1.0  # another size: start over
    with pytest.raises(ValueError):
        EmaSmoother(0.0)


def test_make_smoother() -> None:
    assert make_smoother("flow", 1.0) is None
    assert isinstance(make_smoother("flow", 0.3), FlowSmoother)
    assert isinstance(make_smoother("ema", 0.3), EmaSmoother)
    with pytest.raises(ValueError, match="unknown temporal"):
        make_smoother("median", 0.3)


def test_finest_scale_keeps_small_frames_detailed() -> None:
    assert finest_scale(64) == 0
    assert finest_scale(256) == 1
    assert finest_scale(1024) == 2


def test_flow_smoother_averages_noise_on_a_still_scene() -> None:
    rng = np.random.default_rng(0)
    grey = texture()
    s = FlowSmoother(0.3)
    truth = square(96, 128, 40)
    raw_err, out_err = [], []
    for _ in range(15):
        noisy = (truth + rng.normal(0, 0.1, truth.shape)).astype(np.float32)
        out = s(noisy, grey)
        raw_err.append(np.abs(noisy - truth).mean())
        out_err.append(np.abs(out - truth).mean())
    assert np.mean(out_err[5:]) < 0.6 * np.mean(raw_err[5:])


def test_flow_smoother_follows_motion_where_ema_trails() -> None:
    base = texture(96, 160)
    flow, ema = FlowSmoother(0.3), EmaSmoother(0.3)
    flow_err, ema_err = [], []
    for i in range(12):
        x = 20 + 3 * i  # image and matte move 3 px a frame
        grey = np.roll(base, 3 * i, axis=1)
        m = square(96, 160, x)
        flow_err.append(np.abs(flow(m, grey) - m).mean())
        ema_err.append(np.abs(ema(m) - m).mean())
    assert np.mean(flow_err[3:]) < 0.5 * np.mean(ema_err[3:])


def test_flow_smoother_trusts_the_new_matte_where_the_warp_fails() -> None:
    s = FlowSmoother(0.3)
    m0 = np.zeros((64, 64), np.float32)
    s(m0, texture(64, 64, seed=1))
    out = s(np.ones((64, 64), np.float32), texture(64, 64, seed=2))  # an unrelated frame: a cut
    assert out.mean() > 0.5  # a scene cut is not averaged with the old scene as if still
