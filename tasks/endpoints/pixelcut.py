"""pixelcut/video-background-removal on fal: background and output format, like the local engine."""

from __future__ import annotations

from typing import Any

from tasks.endpoints.options import Background, RemovalOptions

APP = "pixelcut/video-background-removal"


class PixelcutOptions(RemovalOptions):
    """pixelcut's input schema beyond ``video_url`` (RemovalOptions already models it)."""


def arguments(options: PixelcutOptions, video_url: str) -> dict[str, Any]:
    """The JSON body of a submit: every option's wire form is built here, and only here.

    The output format is always explicit so outputs are checkable. ``background_color`` is
    fal's ``RGBColor``, an object ``{"r", "g", "b"}`` in every fal schema that declares it.
    """
    body: dict[str, Any] = {
        "video_url": video_url,
        "background": options.background.value,
        "output_format": options.resolved_format.value,
    }
    if options.background is Background.custom and options.background_color is not None:
        r, g, b = options.background_color
        body["background_color"] = {"r": r, "g": g, "b": b}
    return body
