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

    @property
    def even_sizes(self) -> bool:
        """x264 and x265 refuse odd sizes in 4:2:0 (H.264/H.265 crop in 2-pixel units);
        libvpx-vp9 encodes them as they are (measured with this build)."""
        return self.codec in ("libx264", "libx265")

    def encoded_size(self, width: int, height: int) -> tuple[int, int]:
        """The size this format is written at: an odd side gains one pixel where it must."""
        if not self.even_sizes:
            return width, height
        return width + width % 2, height + height % 2


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
