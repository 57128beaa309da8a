"""Object storage through fsspec: a root URL plus ``storage_options``.

Writes are atomic from a reader's point of view: on a local disk a file is written under a
temporary name and renamed; on S3 a PUT (or a completed multipart upload) appears whole or not
at all. The ledger marks a job done only after its output is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
import httpx
from fsspec.implementations.local import LocalFileSystem

from tasks.errors import InputError, StorageError

CHUNK = 1 << 20


def redact_url(url: str) -> str:
    """Drop query strings (presigned signatures) and user info from a URL shown to people."""
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def s3_options(endpoint_url: str | None = None) -> dict[str, Any]:
    """s3fs options: credentials come from the usual AWS env vars; the endpoint may be overridden."""
    url = endpoint_url or os.environ.get("MATTEFLOW_S3_ENDPOINT_URL") or None
    return {"client_kwargs": {"endpoint_url": url}} if url else {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Storage:
    """A root URL (local path, file://, s3://, memory://) and the files below it."""

    def __init__(
        self,
        root: str,
        storage_options: dict[str, Any] | None = None,
        *,
        input_options: dict[str, Any] | None = None,
    ) -> None:
        self.root_url = root.rstrip("/") or "/"
        # How this run reads s3:// inputs (same endpoint setting as the output by default).
        self.input_options: dict[str, Any] = (
            dict(input_options) if input_options is not None else s3_options()
        )
        options = dict(storage_options or {})
        if root.startswith("s3://") and not options:
            options = s3_options()
        try:
            fs, path = fsspec.core.url_to_fs(self.root_url, **options)
        except (ValueError, ImportError) as exc:
            raise StorageError(f"cannot use output location {redact_url(root)}: {exc}") from exc
        self.fs: Any = fs
        self.root: str = path.rstrip("/")
        self.options = options
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel.lstrip('/')}"

    def url(self, rel: str) -> str:
        """The user-facing URL of ``rel`` (a plain path for local storage)."""
        if self.is_local:
            return self.path(rel)
        return str(self.fs.unstrip_protocol(self.path(rel)))

    def _wrap(self, action: str, rel: str, exc: BaseException) -> StorageError:
        return StorageError(f"storage {action} failed for {self.url(rel)}: {type(exc).__name__}")

    def exists(self, rel: str) -> bool:
        try:
            return bool(self.fs.exists(self.path(rel)))
        except (OSError, ValueError) as exc:
            raise self._wrap("lookup", rel, exc) from exc

    def size(self, rel: str) -> int | None:
        try:
            return int(self.fs.size(self.path(rel)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise self._wrap("lookup", rel, exc) from exc

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with self.fs.open(self.path(rel), "rb") as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise self._wrap("read", rel, exc) from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        try:
            if self.is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                tmp = f"{target}.part-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            else:
                self.fs.pipe_file(target, data)
        except (OSError, ValueError) as exc:
            raise self._wrap("write", rel, exc) from exc

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        return None if data is None else json.loads(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def put_file(self, local: Path, rel: str) -> None:
        """Store a finished local file at ``rel``; it appears whole or not at all."""
        target = self.path(rel)
        try:
            if self.is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                tmp = f"{target}.part-{uuid.uuid4().hex[:8]}"
                shutil.copyfile(local, tmp)
                os.replace(tmp, target)
            else:
                self.fs.put_file(str(local), target)
        except (OSError, ValueError) as exc:
            raise self._wrap("upload", rel, exc) from exc


@contextmanager
def local_input(
    url: str, workdir: Path, storage_options: dict[str, Any] | None = None
) -> Iterator[Path]:
    """A local file holding the input video: local paths as they are, anything else downloaded."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme == "file" else url).expanduser()
        if not path.is_file():
            raise InputError(f"input file not found: {path}", code="input_not_found")
        yield path
        return
    dest = workdir / f"input-{uuid.uuid4().hex[:8]}{Path(parts.path).suffix[:8]}"
    try:
        if parts.scheme in ("http", "https"):
            _download_http(url, dest)
        else:
            options = (
                storage_options
                if storage_options is not None
                else (s3_options() if parts.scheme == "s3" else {})
            )
            fs, path = fsspec.core.url_to_fs(url, **options)
            try:
                fs.get_file(path, str(dest))
            except FileNotFoundError as exc:
                raise InputError(
                    f"input not found: {redact_url(url)}", code="input_not_found"
                ) from exc
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"cannot read input {redact_url(url)}: {type(exc).__name__}",
                    code="input_unreachable",
                ) from exc
        yield dest
    finally:
        dest.unlink(missing_ok=True)


def _download_http(url: str, dest: Path) -> None:
    timeout = httpx.Timeout(30.0, read=60.0)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code >= 400:
                code = "input_not_found" if resp.status_code == 404 else "input_http_error"
                raise InputError(
                    f"input {redact_url(url)} answered HTTP {resp.status_code}", code=code
                )
            with dest.open("wb") as fh:
                for chunk in resp.iter_bytes(CHUNK):
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise InputError(
            f"cannot download input {redact_url(url)}: {type(exc).__name__}",
            code="input_unreachable",
        ) from exc
