"""Preflight: what is checked about an input before any work or spend: who may read local
files, how big an input may be, and whether it is a video at all.

* Local inputs (``file://`` and paths) read the worker's disk, so a run from the Prefect UI must
  not name them: runs allow them only when their parameters say so (the CLI does), or under an
  allow-listed root; a worker can refuse them whatever the parameters say.
* Limits on bytes, duration, pixels and frames refuse an input before it is processed or paid for.
* The preflight turns what would fail later into a clear row error now: an empty file, an HTML
  page where a video was expected, an audio-only file.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import certifi
import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import ErrorCode, InputError
from tasks.media.facts import VideoFacts, read_video_facts
from tasks.media.inputs import local_path
from tasks.storage.store import raise_for_input_response, redact_url, too_large

HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")


class InputSettings(BaseSettings):
    """Input limits and the worker's local-input policy, from ``MATTEFLOW_INPUT_*`` variables.

    Built at the flow's entry point on the machine that runs it, so a UI user cannot change them.
    """

    model_config = SettingsConfigDict(env_prefix="MATTEFLOW_INPUT_", extra="ignore")

    max_bytes: int = Field(
        20 * 2**30, gt=0, description="Largest input file accepted, in bytes (default 20 GiB)."
    )
    max_duration_s: float = Field(
        4 * 3600.0, gt=0, description="Longest input accepted, in seconds (default 4 h)."
    )
    max_pixels: int = Field(
        7680 * 4320, gt=0, description="Largest frame accepted, width x height (default 8K UHD)."
    )
    max_frames: int = Field(
        1_000_000, gt=0, description="Most frames accepted in one input (default 1,000,000)."
    )
    local_roots: list[str] = Field(
        default_factory=list,
        description="Folders whose files any run may read as inputs (a JSON list).",
    )
    deny_local: bool = Field(
        False,
        description="Refuse file:// and local-path inputs whatever a run's parameters say "
        "(set it on workers that take runs from the UI).",
    )


@dataclass(frozen=True)
class LocalInputPolicy:
    """Which local files a run may read: any (``allow_any``), or those under ``roots``."""

    allow_any: bool = False
    roots: tuple[Path, ...] = ()

    @classmethod
    def for_run(
        cls, allow: bool, roots: list[str] | None, settings: InputSettings
    ) -> LocalInputPolicy:
        """A run's policy: its own parameters, narrowed by the worker's settings."""
        if settings.deny_local:
            return cls(False, ())
        every = [*(roots or []), *settings.local_roots]
        return cls(allow, tuple(Path(r).expanduser().resolve() for r in every if r.strip()))

    def including(self, roots: tuple[Path, ...]) -> LocalInputPolicy:
        """The same policy with more allowed roots."""
        return LocalInputPolicy(self.allow_any, (*self.roots, *(r.resolve() for r in roots)))

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be read, or None when it is remote or allowed."""
        path = local_path(url)
        if path is None or self.allow_any:
            return None
        resolved = path.resolve()  # symlinks and ".." cannot leave an allowed root
        if any(resolved.is_relative_to(root) for root in self.roots):
            return None
        where = f" outside the allowed folders ({', '.join(map(str, self.roots))})"
        return (
            f"local input {path} refused: this run may not read the worker's files"
            f"{where if self.roots else ''}; use http(s):// or s3:// URLs, or allow local "
            "inputs (allow_local_inputs / local_input_roots)"
        )


def check_limits(facts: VideoFacts, limits: InputSettings, shown: str) -> None:
    """Raise ``InputError`` for the first limit ``facts`` exceed, naming the setting to raise."""
    checks = [
        (facts.bytes or 0, limits.max_bytes, ErrorCode.input_too_large, "bytes", "MAX_BYTES"),
        (
            facts.duration_s,
            limits.max_duration_s,
            ErrorCode.input_too_long,
            "seconds",
            "MAX_DURATION_S",
        ),
        (
            facts.width * facts.height,
            limits.max_pixels,
            ErrorCode.input_too_many_pixels,
            f"pixels a frame ({facts.width}x{facts.height})",
            "MAX_PIXELS",
        ),
        (
            facts.frames_at_most,
            limits.max_frames,
            ErrorCode.input_too_many_frames,
            "frames",
            "MAX_FRAMES",
        ),
    ]
    for value, limit, code, unit, env in checks:
        if value > limit:
            raise InputError(
                f"input {shown} is over the limit: {value:g} {unit} > {limit:g} "
                f"(MATTEFLOW_INPUT_{env})",
                code=code,
            )


def sniff_file(path: Path, limits: InputSettings) -> int:
    """Refuse an empty file, an oversized one, or a web page saved as a video; return its size."""
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"input {path.name} is empty (0 bytes)", code=ErrorCode.input_empty)
    if size > limits.max_bytes:
        raise InputError(
            f"input {path.name} is over the limit: {size} bytes > {limits.max_bytes} "
            "(MATTEFLOW_INPUT_MAX_BYTES)",
            code=ErrorCode.input_too_large,
        )
    with path.open("rb") as fh:
        head = fh.read(1024).lstrip().lower()
    if head.startswith(HTML_MARKERS) or b"<html" in head:
        raise InputError(
            f"input {path.name} is an HTML page, not a video (a login or error page?)",
            code=ErrorCode.input_html,
        )
    return size


def preflight(path: Path, limits: InputSettings) -> VideoFacts:
    """Everything that can be known about a local input before processing it, checked.

    The file is opened once: its header is checked against the limits,
    then its packets are counted for the exact frame count a correct output must match.
    """
    sniff_file(path, limits)

    def check(facts: VideoFacts) -> None:
        check_limits(facts, limits, path.name)

    return read_video_facts(path, scan=True, check=check)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's roots), loaded once: loading the roots costs more
    CPU (~25 ms) than the rest of a job's calls to fal together."""
    return ssl.create_default_context(cafile=certifi.where())


def check_remote(url: str, limits: InputSettings, *, timeout_s: float = 20.0) -> int | None:
    """Ask an http(s) input's server about it before anyone pays to fetch it.

    Returns its size when the server says; raises ``InputError`` for 404/401/403, a web page, or
    a size over the limit. Transient trouble (5xx, 429, a reset) is left to the probe's retries. HEAD first; where HEAD is refused (presigned links are signed for GET
    only) a one-byte ranged GET.
    """
    shown = redact_url(url)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True, verify=tls_context()) as client:
            resp = client.head(url)
            if resp.status_code in (401, 403, 405, 501):
                with client.stream("GET", url, headers={"Range": "bytes=0-0"}) as resp:
                    pass  # headers are enough; the body is not read
    except httpx.HTTPError:
        return None  # a moment's trouble: the probe that follows retries and decides
    if resp.status_code in (405, 408, 429, 501) or resp.status_code >= 500:
        return None
    raise_for_input_response(resp, shown)
    size: int | None = None
    total = resp.headers.get("content-range", "").rpartition("/")[2]
    if resp.status_code == 206 and total.isdigit():
        size = int(total)
    elif resp.status_code != 206 and resp.headers.get("content-length", "").isdigit():
        size = int(resp.headers["content-length"])
    if size is not None and size > limits.max_bytes:
        raise too_large(url, size, limits.max_bytes)
    return size


def carry_rotation(path: Path, degrees: int) -> None:
    """Give an output the input's display rotation (phone videos), remuxing it in place.

    The engine works on frames as stored; this makes players show the output upright as they
    show the input. Packets are copied, not re-encoded, and VP9 alpha survives.
    """
    if not degrees % 360:
        return
    tmp = path.with_name(f"rotated-{path.name}")
    with av.open(str(path)) as src:
        fmt = src.format.name.split(",")[0]
        if fmt == "matroska" and path.suffix == ".webm":
            fmt = "webm"
        with av.open(str(tmp), "w", format=fmt) as dst:
            mapping: dict[int, Any] = {}
            rotated = False
            for stream in src.streams:
                if stream.type not in ("video", "audio"):
                    continue
                out: Any = dst.add_stream_from_template(stream)
                out.metadata.update(stream.metadata)
                if stream.type == "video" and not rotated:
                    out.set_display_rotation(degrees)
                    rotated = True
                mapping[stream.index] = out
            for packet in src.demux([s for s in src.streams if s.index in mapping]):
                if packet.dts is None:
                    continue
                packet.stream = mapping[packet.stream.index]
                dst.mux(packet)
    tmp.replace(path)
