"""Verify outputs: container, codec, alpha, frames, size, timing and a sane matte, with reasons.

Every check runs and every failure is kept, so a broken output says everything that is wrong
with it at once. Reason codes are stable (they end up in the results table and its reports).
Probing lives in ``tasks.media.probe``; its public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import ErrorCode
from tasks.media.facts import VideoFacts
from tasks.media.formats import FormatSpec, OutputFormat
from tasks.media.probe import (
    NoVideoStream,
    VideoProbe,
    decoder_for,
    frame_alpha,
    mask_alpha,
    pix_fmt_has_alpha,
    probe,
    sniff_container,
    truncation,
)
from tasks.media.sampled import probe_sampled
from tasks.storage.store import sha256_file

__all__ = [
    "Expectation",
    "NoVideoStream",
    "VerifyReport",
    "VerifySettings",
    "VideoProbe",
    "decoder_for",
    "pix_fmt_has_alpha",
    "probe",
    "should_retry_verification",
    "verify_mask",
    "verify_output",
]

GIF_TICK_S = 0.01  # GIF frame delays are whole centiseconds


def _describe(exc: BaseException) -> str:
    """FFmpeg's message without the file name (a temporary path tells the reader nothing)."""
    return str(getattr(exc, "strerror", None) or exc)


# Failures a second run of the same job can plausibly fix (a cut download, a dropped frame);
# a wrong codec or an empty matte would come back the same and be paid for twice.
TRANSIENT_CODES = frozenset(
    {
        ErrorCode.output_missing,
        ErrorCode.output_empty,
        ErrorCode.output_truncated,
        ErrorCode.output_undecodable,
        ErrorCode.frame_count,
        ErrorCode.mask_undecodable,
        ErrorCode.mask_frame_count,
    }
)
MAX_VERIFICATION_RETRIES = 1


class VerifySettings(BaseModel):
    """Thresholds of the output checks and the retry policy for outputs that fail them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["sampled", "full"] = Field(
        "sampled",
        description="sampled: frame count and timing from the container's packets, alpha and "
        "matte on a sample of decoded frames (a few percent of a full decode); full: decode "
        "every frame (also finds a frame in the middle that does not decode).",
    )
    sample_frames: int = Field(
        6,
        ge=1,
        le=1000,
        description="Sampled mode: keyframes decoded (each with the frame after it), spread "
        "over the file, the first and the last included.",
    )
    min_fg_fraction: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        description="Fail below this mean share of foreground pixels (alpha >= 0.5): "
        "the subject was erased.",
    )
    max_fg_fraction: float = Field(
        0.995,
        ge=0.0,
        le=1.0,
        description="Fail above this mean share of foreground pixels: nothing was removed.",
    )
    max_flicker: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fail above this mean absolute alpha change between consecutive frames "
        "(0..1); unset: flicker is only recorded.",
    )
    matte_sample_every: int = Field(
        1,
        ge=1,
        le=1000,
        description="Full mode: measure the matte on every Nth frame (and the frame after it, "
        "for flicker).",
    )
    background_tolerance: int = Field(
        40,
        ge=0,
        le=255,
        description="Solid-colour outputs: a pixel within this distance (max over R, G, B) of "
        "the background colour counts as background.",
    )
    fps_tolerance: float = Field(
        0.01, ge=0.0, le=1.0, description="Allowed relative difference of frame rates."
    )
    duration_tolerance_frames: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="Constant frame rate: allowed duration difference, in frame periods.",
    )
    vfr_frame_tolerance: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Variable frame rate input: allowed relative difference of frame counts "
        "(endpoints may resample to a constant rate).",
    )
    vfr_duration_tolerance: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Variable frame rate input: allowed relative difference of durations.",
    )
    mask_max_mad: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Mask video: largest mean absolute difference from the main video's alpha.",
    )
    retry_failed_verification: bool = Field(
        False,
        description="Run a job once more when its output fails verification with a transient "
        "reason. Off by default: on a paid endpoint the second run is billed.",
    )
    retry_codes: frozenset[ErrorCode] = Field(
        TRANSIENT_CODES, description="Reason codes that make a verification failure retryable."
    )


SizeRule = Literal["same", "aspect", "any"]


@dataclass
class Expectation:
    """What a correct output of a job looks like; ``None`` leaves a property unchecked."""

    spec: FormatSpec
    transparent: bool
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    variable_frame_rate: bool = False
    aspect: tuple[int, int] | None = None  # any size with this width:height ratio
    size_slack: int = 0  # pixels either way each side may differ (an odd size rounded to even)
    background_rgb: tuple[int, int, int] | None = None  # solid colour of an opaque output

    @classmethod
    def from_input(
        cls,
        spec: FormatSpec,
        transparent: bool,
        source: VideoFacts,
        *,
        size: SizeRule | tuple[int, int] = "same",
        background_rgb: tuple[int, int, int] | None = None,
    ) -> Expectation:
        """Frames and timing of the input; the size as the endpoint defines it.

        ``size``: "same" (the input's), "aspect" (any size of the same shape, for endpoints that
        resize), "any", or an exact ``(width, height)``.
        """
        width = height = None
        aspect = None
        if size == "same":
            width, height = source.width, source.height
        elif size == "aspect":
            aspect = (source.width, source.height)
        elif isinstance(size, tuple):
            width, height = size
        return cls(
            spec=spec,
            transparent=transparent,
            frames=source.frames,
            width=width,
            height=height,
            fps=source.fps or None,
            duration_s=source.duration_s or None,
            variable_frame_rate=source.variable_frame_rate,
            aspect=aspect,
            background_rgb=None if transparent else background_rgb,
        )


Reason = tuple[ErrorCode, str]


@dataclass
class VerifyReport:
    ok: bool
    reasons: list[Reason] = field(default_factory=list)
    probe: VideoProbe | None = None
    bytes: int = 0
    sha256: str = ""

    def add(self, reasons: Iterable[Reason]) -> None:
        self.reasons.extend(reasons)
        self.ok = not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "codes": self.codes,
            "reasons": [{"code": c, "error": e} for c, e in self.reasons],
            "probe": asdict(self.probe) if self.probe else None,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }

    @property
    def codes(self) -> list[ErrorCode]:
        return [code for code, _ in self.reasons]

    @property
    def error(self) -> str:
        return "; ".join(text for _, text in self.reasons)

    @property
    def error_code(self) -> ErrorCode | None:
        """The first failed check's code: checks run from the container inward, so the first
        reason is the most basic one; ``codes`` (the ``verify_reasons`` column) lists all."""
        return self.reasons[0][0] if self.reasons else None


def verify_output(
    path: Path,
    expected: Expectation,
    settings: VerifySettings | None = None,
    *,
    sha256: str | None = None,
) -> VerifyReport:
    """Check ``path`` against ``expected`` and collect every reason it falls short.

    ``sha256``: the file's digest when the caller computed it while the file streamed in (the
    file is then not read again to hash it).
    """
    settings = settings or VerifySettings()
    if not path.exists():
        return VerifyReport(False, [(ErrorCode.output_missing, "no output file was produced")])
    size = path.stat().st_size
    if size == 0:
        return VerifyReport(False, [(ErrorCode.output_empty, "output file is empty (0 bytes)")])
    report = VerifyReport(True, bytes=size, sha256=sha256 or sha256_file(path))
    kind = sniff_container(path)
    try:
        found = _probe(path, expected, settings)
    except NoVideoStream as exc:
        report.add([(ErrorCode.output_not_video, f"output is not a video: {_describe(exc)}")])
        return report
    except (av.error.FFmpegError, OSError) as exc:  # InvalidDataError is also a ValueError
        cut = truncation(path, kind) if kind else None
        if cut:
            report.add([(ErrorCode.output_truncated, f"output is truncated: {cut}")])
        elif kind is None:
            report.add(
                [(ErrorCode.output_not_video, f"output is not a video container: {_describe(exc)}")]
            )
        else:
            report.add(
                [(ErrorCode.output_undecodable, f"{kind} output does not open: {_describe(exc)}")]
            )
        return report
    report.probe = found
    reasons = [
        *_integrity(path, kind, found),
        *_format(expected, found),
        *_alpha(expected, found),
        *_geometry(expected, found, settings),
        *_matte(expected, found, settings),
    ]
    report.add(reasons)
    return report


def _probe(path: Path, expected: Expectation, settings: VerifySettings) -> VideoProbe:
    if settings.mode == "sampled":
        return probe_sampled(
            path,
            samples=settings.sample_frames,
            background_rgb=expected.background_rgb,
            background_tolerance=settings.background_tolerance,
        )
    return probe(
        path,
        sample_every=settings.matte_sample_every,
        background_rgb=expected.background_rgb,
        background_tolerance=settings.background_tolerance,
    )


def _integrity(path: Path, kind: str | None, found: VideoProbe) -> Iterator[Reason]:
    cut = truncation(path, kind)
    period = 1.0 / found.fps if found.fps else 0.0
    declared = found.declared_duration_s
    if not cut and declared and found.duration_s < declared - max(2 * period, 0.1):
        cut = f"{found.duration_s:.3f} s decode of the {declared:.3f} s the container declares"
    if cut:
        yield ErrorCode.output_truncated, f"output is truncated: {cut}"
    elif found.decode_error:
        yield (
            ErrorCode.output_undecodable,
            f"decoding failed after {found.frames} frames: {found.decode_error}",
        )
    if found.frames == 0 and not cut and not found.decode_error:
        yield ErrorCode.output_undecodable, "no frame of the output decodes"


def _format(expected: Expectation, found: VideoProbe) -> Iterator[Reason]:
    spec = expected.spec
    if found.container != spec.container:
        yield (
            ErrorCode.wrong_container,
            f"container is {found.container}, expected {spec.container}",
        )
    if found.codec not in spec.decoder_names:
        yield (
            ErrorCode.wrong_codec,
            f"codec is {found.codec}, expected {'/'.join(spec.decoder_names)}",
        )


def _alpha(expected: Expectation, found: VideoProbe) -> Iterator[Reason]:
    want = expected.transparent and expected.spec.carries_alpha
    if want and not found.has_alpha:
        yield (
            ErrorCode.alpha_missing,
            f"a transparent output was requested but it is opaque ({found.pix_fmt})",
        )
    if not want and found.has_alpha:
        yield (
            ErrorCode.alpha_unexpected,
            f"an opaque output was requested but it has alpha ({found.pix_fmt})",
        )


def _geometry(
    expected: Expectation, found: VideoProbe, settings: VerifySettings
) -> Iterator[Reason]:
    gif = expected.spec.name is OutputFormat.gif
    vfr = expected.variable_frame_rate
    if expected.frames is not None and found.frames:
        allowed = max(1, round(settings.vfr_frame_tolerance * expected.frames)) if vfr else 0
        if abs(found.frames - expected.frames) > allowed:
            yield (
                ErrorCode.frame_count,
                f"{found.frames} frames decoded, expected {expected.frames}",
            )
    if expected.width is not None and expected.height is not None:
        slack = expected.size_slack
        if abs(found.width - expected.width) > slack or abs(found.height - expected.height) > slack:
            yield (
                ErrorCode.wrong_size,
                f"size {found.width}x{found.height}, expected {expected.width}x{expected.height}",
            )
    elif expected.aspect is not None:
        aw, ah = expected.aspect
        if abs(found.width * ah / aw - found.height) > 2:
            yield ErrorCode.wrong_size, f"size {found.width}x{found.height} is not {aw}:{ah}"
    if expected.fps and found.fps and not vfr:
        if gif:  # delays are rounded to 1/100 s, so compare frame periods
            bad = abs(1 / found.fps - 1 / expected.fps) > GIF_TICK_S + 1e-6
        else:
            bad = abs(found.fps - expected.fps) > settings.fps_tolerance * expected.fps
        if bad:
            yield ErrorCode.wrong_fps, f"{found.fps:g} fps, expected {expected.fps:g}"
    if expected.duration_s and found.frames:
        if vfr:
            allowed_s = settings.vfr_duration_tolerance * expected.duration_s
        else:
            period = 1.0 / expected.fps if expected.fps else 0.0
            allowed_s = settings.duration_tolerance_frames * period + 1e-3
            if gif:
                allowed_s += found.frames * GIF_TICK_S / 2
        if abs(found.duration_s - expected.duration_s) > allowed_s:
            yield (
                ErrorCode.wrong_duration,
                f"{found.duration_s:.3f} s long, expected {expected.duration_s:.3f} s",
            )


def _matte(expected: Expectation, found: VideoProbe, settings: VerifySettings) -> Iterator[Reason]:
    fg = found.fg_fraction
    if fg is None:
        return
    if not expected.transparent and expected.background_rgb is None:
        return  # an opaque output's alpha (GIF decodes to BGRA, all opaque) says nothing
    if fg < settings.min_fg_fraction:
        yield (
            ErrorCode.matte_empty,
            f"foreground covers {fg:.1%} of the frame (min {settings.min_fg_fraction:.1%}): "
            "the subject was erased",
        )
    if fg > settings.max_fg_fraction:
        yield (
            ErrorCode.matte_full,
            f"foreground covers {fg:.1%} of the frame (max {settings.max_fg_fraction:.1%}): "
            "nothing was removed",
        )
    if settings.max_flicker is not None and (found.flicker or 0.0) > settings.max_flicker:
        yield (
            ErrorCode.matte_flicker,
            f"alpha changes by {found.flicker:.4f} a frame on average (max {settings.max_flicker})",
        )


def _frames(path: Path) -> Iterator[Any]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = decoder_for(stream)
        for packet in container.demux(stream):
            yield from decoder.decode(packet)


def verify_mask(
    main: Path,
    mask: Path,
    settings: VerifySettings | None = None,
    *,
    background_rgb: tuple[int, int, int] | None = None,
) -> list[Reason]:
    """Reasons a mask video disagrees with the main video's matte (empty when it agrees).

    The main matte is its alpha, or its distance from ``background_rgb`` for a solid-colour
    output; the mask is its luma. Both are compared on the sampled frames, at reduced size.
    """
    settings = settings or VerifySettings()
    every = settings.matte_sample_every
    diffs: list[float] = []
    counts = [0, 0]
    try:
        main_frames, mask_frames = _frames(main), _frames(mask)
        for index, (a, m) in enumerate(_zip_counting(main_frames, mask_frames, counts)):
            if index % every:
                continue
            alpha = frame_alpha(a, background_rgb, settings.background_tolerance)
            if alpha is None:
                return [
                    (ErrorCode.mask_mismatch, "the main video has no matte to compare the mask to")
                ]
            luma = mask_alpha(m, size=(alpha.shape[1], alpha.shape[0]))
            diffs.append(float(np.abs(alpha - luma).mean()))
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        return [(ErrorCode.mask_undecodable, f"mask video does not decode: {_describe(exc)}")]
    reasons: list[Reason] = []
    if counts[0] != counts[1]:
        reasons.append(
            (ErrorCode.mask_frame_count, f"mask has {counts[1]} frames, the video {counts[0]}")
        )
    mad = float(np.mean(diffs)) if diffs else 0.0
    if mad > settings.mask_max_mad:
        reasons.append(
            (
                ErrorCode.mask_mismatch,
                f"mask differs from the video's alpha by {mad:.3f} on average "
                f"(max {settings.mask_max_mad})",
            )
        )
    return reasons


def _zip_counting(
    a: Iterator[Any], b: Iterator[Any], counts: list[int]
) -> Iterator[tuple[Any, Any]]:
    """Pairs of frames; afterwards ``counts`` holds how many frames each side had in all."""
    sentinel = object()
    while True:
        x, y = next(a, sentinel), next(b, sentinel)
        counts[0] += x is not sentinel
        counts[1] += y is not sentinel
        if x is sentinel or y is sentinel:
            counts[0] += sum(1 for _ in a)
            counts[1] += sum(1 for _ in b)
            return
        yield x, y


def should_retry_verification(
    codes: Iterable[str], retries_done: int, settings: VerifySettings
) -> bool:
    """Run the job again? Only when enabled, not yet retried, and a reason may be transient."""
    if not settings.retry_failed_verification or retries_done >= MAX_VERIFICATION_RETRIES:
        return False
    return any(code in settings.retry_codes for code in codes)
