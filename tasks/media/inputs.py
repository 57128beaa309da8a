"""Inputs of remote endpoints: where each can be read, and its container metadata.

The metadata (no decoding) prices a job before it is submitted: PyAV opens local files and
http(s) URLs (presigned S3 URLs too) and reads only the headers it needs, so a remote input costs
a few range requests, not a download.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import fsspec

from tasks.errors import ErrorCode, InputError
from tasks.storage.store import redact_url, s3_options


@dataclass(frozen=True)
class InputMetadata:
    """What the container says about an input; ``exact`` when it stores the frame count."""

    frames: int
    duration_s: float
    width: int
    height: int
    fps: float
    size_bytes: int | None
    exact: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_timing(container: Any, stream: Any) -> tuple[float, float, int | None]:
    """(fps, duration in s, frame count if the container states it) from headers alone."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(0)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    return float(rate), duration, int(stream.frames) if stream.frames else None


def read_input_metadata(location: str, *, timeout_s: float = 30.0) -> InputMetadata:
    """Read an input's container metadata; raises ``InputError`` when it is not a video."""
    shown = redact_url(location)
    try:
        with av.open(location, timeout=timeout_s) as container:
            if not container.streams.video:
                raise InputError(
                    f"input {shown} has no video stream", code=ErrorCode.input_no_video
                )
            stream = container.streams.video[0]
            fps, duration, counted = stream_timing(container, stream)
            exact = counted is not None
            frames = counted if counted is not None else round(duration * fps)
            size = container.size if isinstance(getattr(container, "size", None), int) else None
            return InputMetadata(
                frames=frames,
                duration_s=round(duration, 3),
                width=int(stream.codec_context.width),
                height=int(stream.codec_context.height),
                fps=round(fps, 3),
                size_bytes=size,
                exact=exact,
            )
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(
            f"input {shown} cannot be probed: {type(exc).__name__}: "
            f"{str(exc).replace(location, shown)[:200]}",
            code=ErrorCode.input_unreadable,
        ) from exc


def local_path(url: str) -> Path | None:
    """The local file a manifest URL names, or None for a remote one."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if len(parts.scheme) <= 1:  # no scheme, or a Windows drive letter
        return Path(url).expanduser()
    return None


def presign(url: str, expires_s: int, storage_options: dict[str, Any] | None) -> str:
    """A presigned GET URL for an ``s3://`` input, so others can fetch it without our keys."""
    options = storage_options if storage_options is not None else s3_options()
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        if not fs.exists(path):
            raise InputError(f"input not found: {redact_url(url)}", code=ErrorCode.input_not_found)
        return str(fs.url(path, expires=expires_s))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot presign input {redact_url(url)}: {type(exc).__name__}",
            code=ErrorCode.input_unreachable,
        ) from exc


def readable_location(url: str, expires_s: int, storage_options: dict[str, Any] | None) -> str:
    """Where an input can be read: a local path, the URL itself, or a presigned s3 URL."""
    path = local_path(url)
    if path is not None:
        if not path.is_file():
            raise InputError(f"input file not found: {path}", code=ErrorCode.input_not_found)
        return str(path)
    if urlsplit(url).scheme == "s3":
        return presign(url, expires_s, storage_options)
    return url
