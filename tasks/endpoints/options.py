"""Removal options shared by the local engine and pixelcut: background and output format."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tasks.media.formats import OutputFormat, spec_for


class Background(StrEnum):
    transparent = "transparent"
    black = "black"
    white = "white"
    green = "green"
    blue = "blue"
    magenta = "magenta"
    custom = "custom"


BACKGROUND_RGB: dict[Background, tuple[int, int, int]] = {
    Background.black: (0, 0, 0),
    Background.white: (255, 255, 255),
    Background.green: (0, 255, 0),
    Background.blue: (0, 0, 255),
    Background.magenta: (255, 0, 255),
}


def parse_rgb(value: Any) -> Any:
    """Accept "R,G,B", "#RRGGBB", a list or a tuple; range checks happen in the model."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("#") and len(text) == 7:
            try:
                return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
            except ValueError:
                raise ValueError(f"not a colour: {value!r} (use R,G,B or #RRGGBB)") from None
        parts = [p.strip() for p in text.strip("()[]").split(",")]
        if len(parts) != 3:
            raise ValueError(f"not a colour: {value!r} (use R,G,B or #RRGGBB)")
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"not a colour: {value!r} (use R,G,B or #RRGGBB)") from None
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


RGB = Annotated[
    tuple[
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
    ],
    BeforeValidator(parse_rgb),
]


class RemovalOptions(BaseModel):
    """What the output looks like: background and format (pixelcut's schema, used by local too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    background: Background = Field(
        Background.transparent, description="Background of the output video."
    )
    background_color: RGB | None = Field(
        None, description="RGB colour, only with background=custom (e.g. 12,200,40)."
    )
    output_format: OutputFormat | None = Field(
        None, description="Container and codec; default webm_vp9 (transparent) or mp4_h264."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RemovalOptions:
        if self.background is Background.custom and self.background_color is None:
            raise ValueError("background=custom needs background_color (R,G,B)")
        if self.background is not Background.custom and self.background_color is not None:
            raise ValueError("background_color is only used with background=custom")
        fmt = self.resolved_format
        if self.background is Background.transparent and not spec_for(fmt).carries_alpha:
            raise ValueError(
                f"output_format {fmt.value} carries no alpha channel, so a transparent "
                "background is impossible: use webm_vp9, mkv_vp9, mov_proresks or gif, "
                "or choose a solid background"
            )
        return self

    @property
    def resolved_format(self) -> OutputFormat:
        if self.output_format is not None:
            return self.output_format
        if self.background is Background.transparent:
            return OutputFormat.webm_vp9
        return OutputFormat.mp4_h264

    @property
    def transparent(self) -> bool:
        return self.background is Background.transparent

    @property
    def rgb(self) -> tuple[int, int, int] | None:
        """The solid background colour, or None when transparent."""
        if self.background is Background.transparent:
            return None
        if self.background is Background.custom:
            return self.background_color
        return BACKGROUND_RGB[self.background]
