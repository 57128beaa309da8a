"""Object storage through fsspec: a root URL plus ``storage_options``.

Writes are atomic from a reader's point of view: on a local disk a file is written under a
temporary name and renamed; on S3 a PUT (or a completed multipart upload) appears whole or not
at all. The ledger marks a job done only after its output is stored.

Conditional writes (``create_json``, ``replace_json``) decide between runs that race for one
object (job claims, tasks/ledger/claims.py): on S3 ``If-None-Match: *`` and ``If-Match: ETag``;
on a local disk a hard link (fails if the name exists) and a compare-and-swap under ``flock``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import fsspec
import httpx
from botocore.exceptions import BotoCoreError, ClientError
from fsspec.asyn import sync
from fsspec.implementations.local import LocalFileSystem

from tasks.errors import ErrorCode, InputError, StorageError
from tasks.retry import Backoff, call_with_backoff

CHUNK = 1 << 20
T = TypeVar("T")
PARTIAL_DIR = ".partial"  # local writes land here first, then move into place in one rename
# Storage calls outlive an outage of up to ~8-10 s; then the job fails and its row says why.
STORAGE_RETRY = Backoff(attempts=5, base_delay_s=0.5, max_delay_s=8.0)
# What s3fs/botocore raise when storage misbehaves (botocore's are not OSErrors).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, BotoCoreError)
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)
log = logging.getLogger("matteflow.storage")
LOCKS_DIR = ".locks"  # local compare-and-swap lock files (flock), one per conditional object
_MEMORY_CAS = threading.Lock()  # memory:// and other in-process filesystems (tests)


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists (create) or changed since it was read.

    Not an OSError, so the storage retry loop never repeats it."""


def precondition_failed(exc: BaseException) -> bool:
    """Whether an S3 error (as s3fs translated it) is a 412 PreconditionFailed."""
    if isinstance(exc, FileExistsError):
        return True
    cause = exc if isinstance(exc, ClientError) else exc.__cause__
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return bool(error.get("Code") == "PreconditionFailed" or status == 412)
    return False


def etag_of(data: bytes) -> str:
    """The version tag of a local or in-memory object: a hash of its bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def transient_storage_error(exc: BaseException) -> bool:
    """Connection failures, timeouts and 5xx are worth another attempt; a missing key is not."""
    return isinstance(exc, STORAGE_ERRORS) and not isinstance(exc, PERMANENT)


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
        retry: Backoff = STORAGE_RETRY,
    ) -> None:
        self.root_url = root.rstrip("/") or "/"
        # How this run reads s3:// inputs (same endpoint setting as the output by default).
        self.input_options: dict[str, Any] = (
            dict(input_options) if input_options is not None else s3_options()
        )
        options = dict(storage_options or {})
        if root.startswith("s3://") and not options:
            options = s3_options()
        if root.startswith("s3://"):
            # One retry layer per storage call, ours (``_call``): it knows which errors are worth
            # another attempt and logs each one. botocore's loop is turned off here
            # (total_max_attempts counts the first try; ``max_attempts`` would count retries).
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("retries", {"total_max_attempts": 1})
            options["config_kwargs"] = config
        self.retry = retry
        try:
            fs, path = fsspec.core.url_to_fs(self.root_url, **options)
        except (ValueError, ImportError) as exc:
            raise StorageError(f"cannot use output location {redact_url(root)}: {exc}") from exc
        if hasattr(fs, "retries"):
            # s3fs wraps every S3 call in its own loop (``_error_wrapper``: up to ``retries``
            # tries with 1.7**i * 0.1 s sleeps on timeouts, SlowDown and the like), and reads in
            # ``_get_file`` restart up to ``retries`` times. Set on the instance: the constructor
            # does not take it, and only Storage's own instances (its options) get it.
            fs.retries = 1
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
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        tries = f" after {self.retry.attempts} attempts" if transient_storage_error(exc) else ""
        return StorageError(
            f"storage {action} failed for {self.url(rel)}{tries}: {type(exc).__name__}"
            + (f": {detail}" if detail else ""),
            code=ErrorCode.storage_unavailable if tries else ErrorCode.storage_error,
        )

    def _call(self, action: str, rel: str, fn: Callable[[], T]) -> T:
        """Run one storage call under the retry policy; translate what escapes it.

        ``FileNotFoundError`` passes through: readers turn it into None, writers into an error.
        """

        def note(attempt: int, exc: BaseException, delay: float) -> None:
            log.warning(
                "storage %s of %s failed (attempt %d of %d: %s); retrying in %.1f s",
                action,
                self.url(rel),
                attempt,
                self.retry.attempts,
                type(exc).__name__,
                delay,
            )

        try:
            return call_with_backoff(
                fn, self.retry, transient=transient_storage_error, on_retry=note
            )
        except FileNotFoundError:
            raise
        except STORAGE_ERRORS as exc:
            raise self._wrap(action, rel, exc) from exc

    def exists(self, rel: str) -> bool:
        return bool(self._call("lookup", rel, lambda: self.fs.exists(self.path(rel))))

    def size(self, rel: str) -> int | None:
        try:
            return int(self._call("lookup", rel, lambda: self.fs.size(self.path(rel))))
        except FileNotFoundError:
            return None

    def read_bytes(self, rel: str) -> bytes | None:
        def read() -> bytes:
            with self.fs.open(self.path(rel), "rb") as fh:
                return bytes(fh.read())

        try:
            return self._call("read", rel, read)
        except FileNotFoundError:
            return None

    def _partial(self, target: str) -> Path:
        """A temporary local path outside ``videos/`` and ``jobs/``, on the same filesystem."""
        tmp = Path(self.root) / PARTIAL_DIR / f"{uuid.uuid4().hex}-{Path(target).name}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        return tmp

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)

        def write() -> None:
            if self.is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                tmp = self._partial(target)
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                self.fs.pipe_file(target, data)

        self._write("write", rel, write)

    def _write(self, action: str, rel: str, fn: Callable[[], None]) -> None:
        try:
            self._call(action, rel, fn)
        except FileNotFoundError as exc:  # a missing bucket or folder: a write cannot succeed
            raise self._wrap(action, rel, exc) from exc

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        return None if data is None else json.loads(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    # -- conditional writes (claims) ------------------------------------------------------

    def read_json_tagged(self, rel: str) -> tuple[Any, str] | None:
        """``(object, etag)`` read in one request, or None when absent."""

        def read() -> tuple[bytes, str]:
            if self.is_s3:
                return self._s3_get(rel)
            with self.fs.open(self.path(rel), "rb") as fh:
                data = bytes(fh.read())
            return data, etag_of(data)

        try:
            data, etag = self._call("read", rel, read)
        except FileNotFoundError:
            return None
        return json.loads(data), etag

    def create_json(self, rel: str, obj: Any) -> str | None:
        """Create ``rel`` only if it does not exist; its etag, or None when it already did."""
        data = _json_bytes(obj)
        return self._conditional("create", rel, lambda: self._create(rel, data))

    def replace_json(self, rel: str, obj: Any, etag: str) -> str | None:
        """Replace ``rel`` only if it is still at ``etag``; the new etag, or None if it changed."""
        data = _json_bytes(obj)
        return self._conditional("replace", rel, lambda: self._replace(rel, data, etag))

    @property
    def is_s3(self) -> bool:
        protocol = self.fs.protocol
        return "s3" in ((protocol,) if isinstance(protocol, str) else protocol)

    def _conditional(self, action: str, rel: str, fn: Callable[[], str]) -> str | None:
        try:
            return self._call(action, rel, fn)
        except PreconditionFailed:
            return None
        except FileNotFoundError as exc:
            raise self._wrap(action, rel, exc) from exc

    def _s3_key(self, rel: str) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(self.path(rel))
        return str(bucket), str(key)

    def _s3_get(self, rel: str) -> tuple[bytes, str]:
        bucket, key = self._s3_key(rel)

        async def get() -> tuple[bytes, str]:
            out = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with out["Body"] as body:
                return bytes(await body.read()), str(out["ETag"])

        return sync(self.fs.loop, get)  # type: ignore[no-any-return]

    def _s3_put(self, rel: str, data: bytes, **condition: str) -> str:
        bucket, key = self._s3_key(rel)
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError as exc:
            if precondition_failed(exc):
                raise PreconditionFailed(str(exc)) from exc
            raise
        return str(out["ETag"])

    def _create(self, rel: str, data: bytes) -> str:
        if self.is_s3:
            return self._s3_put(rel, data, IfNoneMatch="*")
        if not self.is_local:
            with _MEMORY_CAS:
                if self.fs.exists(self.path(rel)):
                    raise PreconditionFailed(rel)
                self.fs.pipe_file(self.path(rel), data)
            return etag_of(data)
        target = Path(self.path(rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._partial(str(target))
        try:
            tmp.write_bytes(data)
            os.link(tmp, target)  # atomic, and fails when the name exists (like O_EXCL)
        except FileExistsError as exc:
            raise PreconditionFailed(rel) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return etag_of(data)

    def _replace(self, rel: str, data: bytes, etag: str) -> str:
        if self.is_s3:
            return self._s3_put(rel, data, IfMatch=etag)
        if not self.is_local:
            with _MEMORY_CAS:
                if etag_of(self.fs.cat_file(self.path(rel))) != etag:
                    raise PreconditionFailed(rel)
                self.fs.pipe_file(self.path(rel), data)
            return etag_of(data)
        with self._local_lock(rel):
            target = Path(self.path(rel))
            if etag_of(target.read_bytes()) != etag:
                raise PreconditionFailed(rel)
            tmp = self._partial(str(target))
            try:
                tmp.write_bytes(data)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return etag_of(data)

    @contextmanager
    def _local_lock(self, rel: str) -> Iterator[None]:
        """An exclusive ``flock`` for one object; the kernel drops it if the process dies."""
        lock = Path(self.root) / LOCKS_DIR / (rel.replace("/", "__") + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def put_file(self, local: Path, rel: str) -> None:
        """Store a finished local file at ``rel``; it appears whole or not at all."""
        target = self.path(rel)

        def put() -> None:
            if self.is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                tmp = self._partial(target)
                try:
                    shutil.copyfile(local, tmp)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                self.fs.put_file(str(local), target)

        self._write("upload", rel, put)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


@contextmanager
def local_input(
    url: str,
    workdir: Path,
    storage_options: dict[str, Any] | None = None,
    *,
    max_bytes: int | None = None,
) -> Iterator[Path]:
    """A local file holding the input video: local paths as they are, anything else downloaded.

    A download stops as soon as it passes ``max_bytes``, so an oversized input costs no disk.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme == "file" else url).expanduser()
        if not path.is_file():
            raise InputError(f"input file not found: {path}", code=ErrorCode.input_not_found)
        yield path
        return
    dest = workdir / f"input-{uuid.uuid4().hex[:8]}{Path(parts.path).suffix[:8]}"
    try:
        if parts.scheme in ("http", "https"):
            _download_http(url, dest, max_bytes)
        else:
            options = (
                storage_options
                if storage_options is not None
                else (s3_options() if parts.scheme == "s3" else {})
            )
            try:
                fs, path = fsspec.core.url_to_fs(url, **options)
                size = fs.size(path)
                if max_bytes is not None and size is not None and size > max_bytes:
                    raise too_large(url, int(size), max_bytes)
                fs.get_file(path, str(dest))
            except FileNotFoundError as exc:
                raise InputError(
                    f"input not found: {redact_url(url)}", code=ErrorCode.input_not_found
                ) from exc
            except STORAGE_ERRORS as exc:
                raise InputError(
                    f"cannot read input {redact_url(url)}: {type(exc).__name__}",
                    code=ErrorCode.input_unreachable,
                ) from exc
        yield dest
    finally:
        dest.unlink(missing_ok=True)


def too_large(url: str, size: int, limit: int) -> InputError:
    return InputError(
        f"input {redact_url(url)} is over the limit: {size} bytes > {limit} "
        "(MATTEFLOW_INPUT_MAX_BYTES)",
        code=ErrorCode.input_too_large,
    )


def raise_for_input_response(resp: httpx.Response, shown: str) -> None:
    """Row errors for an input URL's answer: missing, forbidden, failing, or a web page."""
    status = resp.status_code
    if status in (404, 410):
        raise InputError(
            f"input {shown} answered HTTP {status} (not found)", code=ErrorCode.input_not_found
        )
    if status in (401, 403):
        raise InputError(
            f"input {shown} answered HTTP {status} (forbidden: an expired or private link?)",
            code=ErrorCode.input_forbidden,
        )
    if status >= 400:
        raise InputError(f"input {shown} answered HTTP {status}", code=ErrorCode.input_http_error)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("text/html", "application/xhtml+xml"):
        raise InputError(
            f"input {shown} is a web page ({ctype}), not a video (a login or error page?)",
            code=ErrorCode.input_html,
        )


def _download_http(url: str, dest: Path, max_bytes: int | None = None) -> None:
    timeout = httpx.Timeout(30.0, read=60.0)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp:
            raise_for_input_response(resp, redact_url(url))
            declared = resp.headers.get("content-length")
            if max_bytes is not None and declared and int(declared) > max_bytes:
                raise too_large(url, int(declared), max_bytes)
            got = 0
            with dest.open("wb") as fh:
                for chunk in resp.iter_bytes(CHUNK):
                    got += len(chunk)
                    if max_bytes is not None and got > max_bytes:
                        raise too_large(url, got, max_bytes)
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise InputError(
            f"cannot download input {redact_url(url)}: {type(exc).__name__}",
            code=ErrorCode.input_unreachable,
        ) from exc
