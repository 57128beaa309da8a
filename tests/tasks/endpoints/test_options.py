from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.endpoints.options import RemovalOptions
from tasks.media.formats import OutputFormat


def test_defaults_resolve_to_transparent_webm() -> None:
    options = RemovalOptions()
    assert options.transparent and options.resolved_format is OutputFormat.webm_vp9
    assert RemovalOptions(background="white").resolved_format is OutputFormat.mp4_h264


@pytest.mark.parametrize("fmt", ["mp4_h264", "mp4_h265", "mov_h265", "mkv_h264", "mkv_h265"])
def test_transparent_with_a_format_without_alpha_is_refused(fmt: str) -> None:
    with pytest.raises(ValidationError, match="carries no alpha"):
        RemovalOptions(background="transparent", output_format=fmt)


@pytest.mark.parametrize(
    ("text", "rgb"),
    [("12,200,40", (12, 200, 40)), ("#0cC828", (12, 200, 40)), ([1, 2, 3], (1, 2, 3))],
)
def test_custom_colour_forms(text: object, rgb: tuple[int, int, int]) -> None:
    assert RemovalOptions(background="custom", background_color=text).rgb == rgb


@pytest.mark.parametrize(
    "kwargs",
    [
        {"background": "custom"},
        {"background": "white", "background_color": "1,2,3"},
        {"background": "custom", "background_color": "300,0,0"},
        {"background": "custom", "background_color": "red"},
        {"background": "purple"},
        {"output_format": "avi"},
    ],
)
def test_inconsistent_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RemovalOptions.model_validate(kwargs)
