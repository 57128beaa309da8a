"""The local engine as an endpoint: pixelcut's options plus the engine's own smoothing knob."""

from __future__ import annotations

from pydantic import Field

from tasks.options import RemovalOptions


class LocalOptions(RemovalOptions):
    smoothing: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="Weight of the newest matte in the temporal average (1.0: no smoothing).",
    )
