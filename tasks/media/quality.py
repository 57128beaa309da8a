"""Matte quality against a known alpha: MAD, MSE, Grad and dtSSD, as RobustVideoMatting's
``evaluation/evaluate_lr.py`` computes them (per frame, then the mean over frames).

Scales follow RVM: MAD and MSE x1e3, Grad as the per-frame sum of squared gradient
differences /1e3, dtSSD x1e2 (0 for the first frame, which has no predecessor). Both videos
are streamed; Grad uses a Gaussian-derivative filter with sigma 1.4, written with numpy so
that the metric needs no OpenCV (it matches ``cv2.filter2D`` with BORDER_REPLICATE).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from tasks.media.verify import decoder_for, pix_fmt_has_alpha

Alpha = npt.NDArray[np.float32]
GRAD_SIGMA = 1.4


def alpha_frames(path: Path) -> Iterator[Alpha]:
    """Alpha of each frame in [0, 1]: the alpha channel, or the luma of a grey matte video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = decoder_for(stream)
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                if pix_fmt_has_alpha(frame.format.name):
                    a = frame.to_ndarray(format="rgba")[..., 3]
                else:
                    a = frame.to_ndarray(format="gray")
                yield a.astype(np.float32) / 255.0


@cache
def gauss_derivative_1d(
    sigma: float = GRAD_SIGMA, epsilon: float = 1e-2
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The separable factors of RVM's x-derivative filter: ``filter_x = outer(g, dg)``, unit norm.

    The half size is where the Gaussian falls below ``epsilon`` of its peak density.
    """
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -x * g / sigma**2
    norm = np.sqrt((np.outer(g, dg) ** 2).sum())
    return g / np.sqrt(norm), dg / np.sqrt(norm)


def _correlate(
    img: npt.NDArray[np.float64], kernel: npt.NDArray[np.float64], axis: int
) -> npt.NDArray[np.float64]:
    """1-D correlation along ``axis`` with replicated borders (cv2.filter2D's convention)."""
    half = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(img, pad, mode="edge")
    out = np.zeros_like(img)
    n = img.shape[axis]
    for k, weight in enumerate(kernel):
        out += weight * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
    return out


def gauss_gradient(alpha: Alpha, sigma: float = GRAD_SIGMA) -> npt.NDArray[np.float64]:
    """Magnitude of the Gaussian-derivative gradient of a matte."""
    g, dg = gauss_derivative_1d(sigma)
    img = alpha.astype(np.float64)
    gx = _correlate(_correlate(img, g, 0), dg, 1)  # filter_x[i, j] = g(i) * dg(j)
    gy = _correlate(_correlate(img, dg, 0), g, 1)  # filter_y = filter_x transposed
    return np.asarray(np.sqrt(gx**2 + gy**2))


def _minmax(a: Alpha) -> Alpha:
    """cv2.normalize(NORM_MINMAX) into [0, 1]; a constant frame becomes all zeros."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def grad_error(pred: Alpha, true: Alpha, sigma: float = GRAD_SIGMA) -> float:
    """RVM's Grad of one frame: sum of squared gradient-magnitude differences, / 1000."""
    diff = gauss_gradient(_minmax(pred), sigma) - gauss_gradient(_minmax(true), sigma)
    return float((diff.astype(np.float32) ** 2).sum()) / 1000.0


def matte_quality(predicted: Path, truth: Path) -> dict[str, float]:
    """Mean per-frame MAD, MSE, Grad and dtSSD of ``predicted``'s alpha against ``truth``.

    Raises ``ValueError`` when the two videos differ in frame count or size: misaligned frames
    would give numbers that mean nothing.
    """
    mad, mse, grad, dt = [], [], [], []
    prev_p: Alpha | None = None
    prev_t: Alpha | None = None
    pred_iter, true_iter = alpha_frames(predicted), alpha_frames(truth)
    while True:
        p, t = next(pred_iter, None), next(true_iter, None)
        if p is None or t is None:
            if p is not None or t is not None:
                rest = 1 + sum(1 for _ in (pred_iter if p is not None else true_iter))
                side = "predicted" if p is not None else "true"
                raise ValueError(f"the {side} video has {rest} more frames than the other")
            break
        if p.shape != t.shape:
            raise ValueError(f"frame sizes differ: predicted {p.shape}, true {t.shape}")
        diff = p - t
        mad.append(float(np.abs(diff).mean()))
        mse.append(float((diff**2).mean()))
        grad.append(grad_error(p, t))
        if prev_p is not None and prev_t is not None:
            d = (p - prev_p) - (t - prev_t)
            dt.append(float(np.sqrt((d**2).sum() / t.size)))
        else:
            dt.append(0.0)
        prev_p, prev_t = p, t
    if not mad:
        raise ValueError("no frames to compare")
    return {
        "frames": len(mad),
        "MAD": round(1e3 * float(np.mean(mad)), 3),
        "MSE": round(1e3 * float(np.mean(mse)), 3),
        "Grad": round(float(np.mean(grad)), 3),
        "dtSSD": round(1e2 * float(np.mean(dt)), 3),
    }
