"""Output formats: container, codec and pixel formats for each name the endpoints accept."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OutputFormat(StrEnum):
    webm_vp9 = "webm_vp9"
    mp4_h264 = "mp4_h264"
    mp4_h265 = "mp4_h265"
    mov_proresks = "mov_proresks"
    mov_h265 = "mov_h265"
    mkv_h264 = "mkv_h264"
    mkv_h265 = "mkv_h265"
    mkv_vp9 = "mkv_vp9"
    gif = "gif"


@dataclass(frozen=True)
class FormatSpec:
    """How one output format is written and what a verified file must look like."""

    name: OutputFormat
    container: str  # FFmpeg muxer name
    extension: str
    codec: str  # encoder name
    decoder_names: tuple[str, ...]  # codec names a conforming file may report
    alpha_pix_fmt: str | None  # None: the format carries no alpha
    opaque_pix_fmt: str
    audio_codec: str | None  # None: the container holds no audio
    content_type: str

    @property
    def carries_alpha(self) -> bool:
        return self.alpha_pix_fmt is not None


_VP9_ALPHA = "yuva420p"
FORMATS: dict[OutputFormat, FormatSpec] = {
    f.name: f
    for f in (
        FormatSpec(
            OutputFormat.webm_vp9,
            "webm",
            ".webm",
            "libvpx-vp9",
            ("vp9",),
            _VP9_ALPHA,
            "yuv420p",
            "libopus",
            "video/webm",
        ),
        FormatSpec(
            OutputFormat.mkv_vp9,
            "matroska",
            ".mkv",
            "libvpx-vp9",
            ("vp9",),
            _VP9_ALPHA,
            "yuv420p",
            "libopus",
            "video/x-matroska",
        ),
        FormatSpec(
            OutputFormat.mp4_h264,
            "mp4",
            ".mp4",
            "libx264",
            ("h264",),
            None,
            "yuv420p",
            "aac",
            "video/mp4",
        ),
        FormatSpec(
            OutputFormat.mp4_h265,
            "mp4",
            ".mp4",
            "libx265",
            ("hevc",),
            None,
            "yuv420p",
            "aac",
            "video/mp4",
        ),
        FormatSpec(
            OutputFormat.mkv_h264,
            "matroska",
            ".mkv",
            "libx264",
            ("h264",),
            None,
            "yuv420p",
            "aac",
            "video/x-matroska",
        ),
        FormatSpec(
            OutputFormat.mkv_h265,
            "matroska",
            ".mkv",
            "libx265",
            ("hevc",),
            None,
            "yuv420p",
            "aac",
            "video/x-matroska",
        ),
        FormatSpec(
            OutputFormat.mov_h265,
            "mov",
            ".mov",
            "libx265",
            ("hevc",),
            None,
            "yuv420p",
            "aac",
            "video/quicktime",
        ),
        FormatSpec(
            OutputFormat.mov_proresks,
            "mov",
            ".mov",
            "prores_ks",
            ("prores",),
            "yuva444p10le",
            "yuv444p10le",
            "pcm_s16le",
            "video/quicktime",
        ),
        FormatSpec(
            OutputFormat.gif,
            "gif",
            ".gif",
            "gif",
            ("gif",),
            "pal8",
            "pal8",
            None,
            "image/gif",
        ),
    )
}


def spec_for(name: OutputFormat | str) -> FormatSpec:
    return FORMATS[OutputFormat(name)]
