"""Matte quality against a known alpha: MAD, MSE and dtSSD (RobustVideoMatting's definitions).

Scales follow RVM's evaluation: MAD and MSE x1e3, dtSSD x1e2. Both videos are streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from tasks.verify import decoder_for, pix_fmt_has_alpha

Alpha = npt.NDArray[np.float32]


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


def matte_quality(predicted: Path, truth: Path) -> dict[str, float]:
    """Mean per-frame MAD, MSE and dtSSD of ``predicted``'s alpha against ``truth``."""
    mad, mse, dt = [], [], []
    prev_p: Alpha | None = None
    prev_t: Alpha | None = None
    for p, t in zip(alpha_frames(predicted), alpha_frames(truth), strict=False):
        diff = p - t
        mad.append(float(np.abs(diff).mean()))
        mse.append(float((diff**2).mean()))
        if prev_p is not None and prev_t is not None:
            d = (p - prev_p) - (t - prev_t)
            dt.append(float(np.sqrt((d**2).mean())))
        prev_p, prev_t = p, t
    if not mad:
        raise ValueError("no frames to compare")
    return {
        "frames": len(mad),
        "MAD": round(1e3 * float(np.mean(mad)), 3),
        "MSE": round(1e3 * float(np.mean(mse)), 3),
        "dtSSD": round(1e2 * float(np.mean(dt)), 3) if dt else 0.0,
    }
