"""Stage two: segment, smooth over time, refine edges and composite one decoded frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import cv2
import numpy as np

from tasks.endpoints.local import LocalOptions
from tasks.endpoints.options import RemovalOptions
from tasks.engine.composite import (
    GIF_PALETTE,
    over_colour,
    plane_array,
    to_gif_indices,
    to_rgba,
    yuv_colour,
    yuv_over_colour,
    yuva_frame,
)
from tasks.engine.reader import Decoded
from tasks.engine.refine import EdgeRefiner, upscale_alpha
from tasks.engine.segment import Segmenter, clean_matte
from tasks.engine.smooth import FlowSmoother, Smoother, make_smoother
from tasks.media.formats import FormatSpec, OutputFormat


@dataclass(frozen=True)
class EngineSettings:
    """The engine's knobs, read from ``LocalOptions`` (plain removal options get defaults)."""

    smoothing: float = 0.2
    temporal: str = "flow"
    refine_edges: bool = True

    @classmethod
    def from_options(
        cls, options: RemovalOptions, smoothing: float | None = None
    ) -> EngineSettings:
        if isinstance(options, LocalOptions):
            base = cls(options.smoothing, options.temporal.value, options.refine_edges)
        else:
            base = cls()
        if smoothing is not None:
            base = cls(smoothing, base.temporal, base.refine_edges)
        return base


class Matter:
    """Turns a decoded frame into the output frame: its matte applied as alpha or over a colour."""

    def __init__(
        self,
        seg: Segmenter,
        settings: EngineSettings,
        spec: FormatSpec,
        colour: tuple[int, int, int] | None,
    ) -> None:
        self.seg, self.spec, self.colour = seg, spec, colour
        self.smoother: Smoother | None = make_smoother(settings.temporal, settings.smoothing)
        gain = float(getattr(seg, "edge_gain", 1.0))
        self.refiner = EdgeRefiner(gain=gain) if settings.refine_edges else None
        self._yuv: tuple[int, ...] | None = None
        # Slow models (``keyframe_interval`` > 1) run on every n-th frame only; optical flow
        # carries the matte in between (the flow smoother's own, or one that only carries).
        self.interval = max(1, int(getattr(seg, "keyframe_interval", 1)))
        self.carrier: FlowSmoother | None = None
        if self.interval > 1:
            smoother = self.smoother
            self.carrier = smoother if isinstance(smoother, FlowSmoother) else FlowSmoother(1.0)
        self.frames = 0

    def matte(self, item: Decoded) -> Any:
        """The model's matte for this frame, smoothed; carried along the flow on frames it skips."""
        grey = None
        if self.smoother is not None or self.carrier is not None:
            grey = np.asarray(cv2.cvtColor(item.small, cv2.COLOR_RGB2GRAY), np.uint8)
        key = self.frames % self.interval == 0
        self.frames += 1
        if self.carrier is not None and grey is not None and not key:
            carried = self.carrier.carry(grey)
            if carried is not None:
                if self.smoother is None or self.carrier is self.smoother:
                    return carried  # the flow smoother's state is the carried matte
                return self.smoother(carried, grey)
        matte = clean_matte(self.seg(item.small))
        if self.carrier is not None and self.carrier is not self.smoother:
            self.carrier(matte, grey)  # type: ignore[arg-type]
        if self.smoother is not None and grey is not None:
            matte = self.smoother(matte, grey)
        return matte

    def alpha(self, item: Decoded, guide: Any) -> Any:
        matte = self.matte(item)
        h, w = guide.shape[:2]
        if self.refiner is not None:
            return self.refiner(matte, guide)
        return upscale_alpha(matte, w, h)

    def __call__(self, item: Decoded) -> Any:
        frame = item.frame
        if item.rgb is None:  # fast path: 4:2:0 planes in, 4:2:0 planes out
            alpha = self.alpha(item, plane_array(frame.planes[0]))
            if self.colour is None:
                return yuva_frame(frame, alpha)
            if self._yuv is None:
                self._yuv = yuv_colour(self.colour, frame.colorspace, frame.color_range)
            return yuv_over_colour(frame, alpha, self._yuv)
        rgb = item.rgb
        alpha = self.alpha(item, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        if self.spec.name is OutputFormat.gif:
            if self.colour is None:
                idx = to_gif_indices(rgb, alpha)
            else:
                idx = to_gif_indices(over_colour(rgb, alpha, self.colour), None)
            new = av.VideoFrame.from_ndarray((idx, GIF_PALETTE), format="pal8")  # type: ignore[arg-type]
        elif self.colour is None:
            new = av.VideoFrame.from_ndarray(to_rgba(rgb, alpha), format="rgba")
        else:
            new = av.VideoFrame.from_ndarray(over_colour(rgb, alpha, self.colour), format="rgb24")
        new.pts, new.time_base = frame.pts, frame.time_base
        return new
