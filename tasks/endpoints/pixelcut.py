"""pixelcut/video-background-removal on fal: background and output format, like the local engine."""

from __future__ import annotations

from typing import Any

from tasks.endpoints.options import Background, RemovalOptions

APP = "pixelcut/video-background-removal"


class PixelcutOptions(RemovalOptions):
    """pixelcut's input schema beyond ``video_url`` (RemovalOptions already models it)."""


def arguments(options: PixelcutOptions, video_url: str) -> dict[str, Any]:
    """The JSON body of a submit; the output format is always explicit so outputs are checkable."""
    body: dict[str, Any] = {
        "video_url": video_url,
        "background": options.background.value,
        "output_format": options.resolved_format.value,
    }
    if options.background is Background.custom and options.background_color is not None:
        body["background_color"] = list(options.background_color)
    return body
