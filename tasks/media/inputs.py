"""Where an input can be read: a local path, the URL itself, or a presigned ``s3://`` URL.

What the input holds is read in ``tasks.media.facts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec

from tasks.errors import ErrorCode, InputError
from tasks.storage.store import redact_url, s3_options


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
