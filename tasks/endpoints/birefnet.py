"""fal-ai/birefnet/v2/video on fal: BiRefNet models, operating resolution and video encoding."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.media.formats import OutputFormat

APP = "fal-ai/birefnet/v2/video"


class BirefnetModel(StrEnum):
    light = "General Use (Light)"
    light_2k = "General Use (Light 2K)"
    heavy = "General Use (Heavy)"
    matting = "Matting"
    portrait = "Portrait"
    dynamic = "General Use (Dynamic)"


class OperatingResolution(StrEnum):
    r1024 = "1024x1024"
    r2048 = "2048x2048"
    r2304 = "2304x2304"


class VideoOutputType(StrEnum):
    x264 = "X264 (.mp4)"
    vp9 = "VP9 (.webm)"
    prores4444 = "PRORES4444 (.mov)"
    gif = "GIF (.gif)"


class VideoQuality(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    maximum = "maximum"


class VideoWriteMode(StrEnum):
    fast = "fast"
    balanced = "balanced"
    small = "small"


OUTPUT_FORMATS: dict[VideoOutputType, OutputFormat] = {
    VideoOutputType.x264: OutputFormat.mp4_h264,
    VideoOutputType.vp9: OutputFormat.webm_vp9,
    VideoOutputType.prores4444: OutputFormat.mov_proresks,
    VideoOutputType.gif: OutputFormat.gif,
}


class BirefnetOptions(BaseModel):
    """birefnet v2 video's input schema beyond ``video_url`` (fal's defaults, except the output
    type: VP9 WebM, so that the default output is transparent like the other endpoints')."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    model: BirefnetModel = Field(BirefnetModel.light, description="BiRefNet variant.")
    operating_resolution: OperatingResolution = Field(
        OperatingResolution.r1024,
        description="Resolution the model runs at; 2304x2304 only with General Use (Dynamic).",
    )
    output_mask: bool = Field(False, description="Also return the matte as a video.")
    refine_foreground: bool = Field(True, description="Refine the foreground edges.")
    sync_mode: bool = Field(
        False, description="Return outputs inline (data URIs) instead of CDN URLs."
    )
    video_output_type: VideoOutputType = Field(
        VideoOutputType.vp9, description="Container and codec of the output video."
    )
    video_quality: VideoQuality = Field(VideoQuality.high, description="Encoder quality.")
    video_write_mode: VideoWriteMode = Field(
        VideoWriteMode.balanced, description="Encoder speed/size trade-off."
    )

    @model_validator(mode="after")
    def _consistent(self) -> BirefnetOptions:
        if (
            self.operating_resolution is OperatingResolution.r2304
            and self.model is not BirefnetModel.dynamic
        ):
            raise ValueError("operating_resolution 2304x2304 needs model 'General Use (Dynamic)'")
        return self

    @property
    def resolved_format(self) -> OutputFormat:
        return OUTPUT_FORMATS[self.video_output_type]

    @property
    def transparent(self) -> bool:
        """VP9, ProRes 4444 and GIF outputs carry alpha; X264 cannot."""
        return self.video_output_type is not VideoOutputType.x264


def arguments(options: BirefnetOptions, video_url: str) -> dict[str, Any]:
    """The JSON body of a submit: every option by its schema name, enums as fal spells them."""
    return {"video_url": video_url, **options.model_dump(mode="json")}
