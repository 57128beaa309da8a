"""The exact JSON each endpoint option becomes on the wire: one case per option and value kind.

fal's schemas are the reference (pixelcut's ``RGBColor`` is an object ``{r, g, b}``, birefnet's
enums are spelled as its OpenAPI spells them); a change here changes what fal receives.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.endpoints.birefnet import BirefnetOptions
from tasks.endpoints.birefnet import arguments as birefnet_arguments
from tasks.endpoints.pixelcut import PixelcutOptions
from tasks.endpoints.pixelcut import arguments as pixelcut_arguments

URL = "https://cdn.example/in.mp4"


def wire(body: dict[str, Any]) -> str:
    """The body as httpx sends it (``json=``): the JSON text, keys in insertion order."""
    return json.dumps(body)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"background": "transparent", "output_format": "webm_vp9"}),
        ({"background": "black"}, {"background": "black", "output_format": "mp4_h264"}),
        ({"background": "white"}, {"background": "white", "output_format": "mp4_h264"}),
        ({"background": "green"}, {"background": "green", "output_format": "mp4_h264"}),
        ({"background": "blue"}, {"background": "blue", "output_format": "mp4_h264"}),
        ({"background": "magenta"}, {"background": "magenta", "output_format": "mp4_h264"}),
        (
            {"background": "custom", "background_color": "12,200,40"},
            {
                "background": "custom",
                "output_format": "mp4_h264",
                "background_color": {"r": 12, "g": 200, "b": 40},
            },
        ),
        (
            {"background": "custom", "background_color": "#FF0080", "output_format": "gif"},
            {
                "background": "custom",
                "output_format": "gif",
                "background_color": {"r": 255, "g": 0, "b": 128},
            },
        ),
        (
            {"output_format": "mov_proresks"},
            {"background": "transparent", "output_format": "mov_proresks"},
        ),
        ({"output_format": "mkv_vp9"}, {"background": "transparent", "output_format": "mkv_vp9"}),
        ({"output_format": "gif"}, {"background": "transparent", "output_format": "gif"}),
        (
            {"background": "black", "output_format": "mov_h265"},
            {"background": "black", "output_format": "mov_h265"},
        ),
    ],
)
def test_pixelcut_wire_form(options: dict[str, Any], expected: dict[str, Any]) -> None:
    body = pixelcut_arguments(PixelcutOptions(**options), URL)
    assert wire(body) == wire({"video_url": URL, **expected})


def test_pixelcut_colour_is_an_object_of_ints() -> None:
    body = pixelcut_arguments(PixelcutOptions(background="custom", background_color=[1, 2, 3]), URL)
    colour = json.loads(wire(body))["background_color"]
    assert colour == {"r": 1, "g": 2, "b": 3}
    assert all(type(v) is int for v in colour.values())


BIREFNET_DEFAULTS = {
    "model": "General Use (Light)",
    "operating_resolution": "1024x1024",
    "output_mask": False,
    "refine_foreground": True,
    "sync_mode": False,
    "video_output_type": "VP9 (.webm)",
    "video_quality": "high",
    "video_write_mode": "balanced",
}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("model", "General Use (Light)"),
        ("model", "General Use (Light 2K)"),
        ("model", "General Use (Heavy)"),
        ("model", "Matting"),
        ("model", "Portrait"),
        ("model", "General Use (Dynamic)"),
        ("operating_resolution", "2048x2048"),
        ("output_mask", True),
        ("refine_foreground", False),
        ("sync_mode", True),
        ("video_output_type", "X264 (.mp4)"),
        ("video_output_type", "PRORES4444 (.mov)"),
        ("video_output_type", "GIF (.gif)"),
        ("video_quality", "low"),
        ("video_quality", "maximum"),
        ("video_write_mode", "fast"),
        ("video_write_mode", "small"),
    ],
)
def test_birefnet_wire_form(option: str, value: Any) -> None:
    body = birefnet_arguments(BirefnetOptions(**{option: value}), URL)
    assert wire(body) == wire({"video_url": URL, **{**BIREFNET_DEFAULTS, option: value}})


def test_birefnet_dynamic_2304() -> None:
    opts = BirefnetOptions(model="General Use (Dynamic)", operating_resolution="2304x2304")
    body = json.loads(wire(birefnet_arguments(opts, URL)))
    assert body["model"] == "General Use (Dynamic)" and body["operating_resolution"] == "2304x2304"
