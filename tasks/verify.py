"""Verify outputs with PyAV: it opens, has the requested codec, frames, size and alpha.

VP9 alpha is only visible through the ``libvpx-vp9`` decoder: FFmpeg's native vp9 decoder
silently drops it, so VP9 streams are decoded with ``libvpx-vp9`` here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tasks.formats import FormatSpec
from tasks.storage import sha256_file

ALPHA_PIX_FMTS = ("yuva", "gbrap", "rgba", "bgra", "argb", "abgr", "ya8", "ya16")


def pix_fmt_has_alpha(name: str) -> bool:
    return name.startswith(ALPHA_PIX_FMTS)


@dataclass
class VideoProbe:
    """What a video file really holds, read by decoding it."""

    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    has_alpha: bool
    has_audio: bool
    alpha_mean: float | None = None  # mean alpha of sampled frames, 0..1


def decoder_for(stream: Any) -> Any:
    """The stream's decoder; VP9 goes through libvpx-vp9 so that alpha survives."""
    if stream.codec_context.name == "vp9":
        ctx = av.CodecContext.create("libvpx-vp9", "r")
        if stream.codec_context.extradata:
            ctx.extradata = stream.codec_context.extradata
        return ctx
    return stream.codec_context


def probe(path: Path, *, sample_every: int = 10) -> VideoProbe:
    """Decode every frame of the first video stream; raise ``av.error.FFmpegError`` if broken."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        decoder = decoder_for(stream)
        frames, last_time = 0, 0.0
        pix_fmt = stream.codec_context.pix_fmt or ""
        alpha_seen = False
        alpha_means: list[float] = []
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                pix_fmt = frame.format.name
                if frame.time is not None:
                    last_time = float(frame.time)
                if frames % sample_every == 0 and pix_fmt_has_alpha(pix_fmt):
                    alpha = frame.to_ndarray(format="rgba")[..., 3]
                    alpha_means.append(float(alpha.mean()) / 255.0)
                    alpha_seen = alpha_seen or bool((alpha < 255).any())
                frames += 1
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        fps = float(rate)
        # GIF decodes to BGRA always: it carries alpha only where some pixel is see-through.
        has_alpha = pix_fmt_has_alpha(pix_fmt) and (
            stream.codec_context.name != "gif" or alpha_seen
        )
        return VideoProbe(
            container=container.format.name,
            codec=stream.codec_context.name,
            pix_fmt=pix_fmt,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=round(fps, 3),
            frames=frames,
            duration_s=round(last_time + (1.0 / fps if fps else 0.0), 3),
            has_alpha=has_alpha,
            has_audio=bool(container.streams.audio),
            alpha_mean=round(float(np.mean(alpha_means)), 4) if alpha_means else None,
        )


@dataclass
class Expectation:
    """What a correct output of a job looks like."""

    spec: FormatSpec
    transparent: bool
    frames: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class VerifyReport:
    ok: bool
    reasons: list[tuple[str, str]] = field(default_factory=list)
    probe: VideoProbe | None = None
    bytes: int = 0
    sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reasons": [{"code": c, "error": e} for c, e in self.reasons],
            "probe": asdict(self.probe) if self.probe else None,
        }

    @property
    def error(self) -> str:
        return "; ".join(text for _, text in self.reasons)

    @property
    def error_code(self) -> str:
        return ",".join(code for code, _ in self.reasons)


def verify_output(path: Path, expected: Expectation) -> VerifyReport:
    """Check ``path`` against ``expected`` and collect every reason it falls short."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return VerifyReport(False, [("output_empty", "output file is empty or missing")])
    report = VerifyReport(True, bytes=size, sha256=sha256_file(path))
    try:
        report.probe = found = probe(path)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        report.ok = False
        report.reasons.append(("output_undecodable", f"output does not decode as video: {exc}"))
        return report
    reasons = report.reasons
    spec = expected.spec
    if found.codec not in spec.decoder_names:
        reasons.append(
            ("wrong_codec", f"codec is {found.codec}, expected {'/'.join(spec.decoder_names)}")
        )
    want_alpha = expected.transparent and spec.carries_alpha
    if want_alpha and not found.has_alpha:
        reasons.append(("alpha_missing", "transparent output was requested but it has no alpha"))
    if not want_alpha and found.has_alpha and spec.name.value != "gif":
        reasons.append(("alpha_unexpected", "an opaque output was requested but it has alpha"))
    if expected.frames is not None and found.frames != expected.frames:
        reasons.append(
            ("frame_count", f"{found.frames} frames decoded, expected {expected.frames}")
        )
    if expected.width is not None and (found.width, found.height) != (
        expected.width,
        expected.height,
    ):
        reasons.append(
            (
                "wrong_size",
                f"size {found.width}x{found.height}, expected {expected.width}x{expected.height}",
            )
        )
    report.ok = not reasons
    return report
