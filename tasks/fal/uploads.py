"""Put a local input on fal's CDN as the current fal_client does, streamed from the file.

fal_client (``projects/fal_client/src/fal_client/client.py``): a CDN token from
``{REST_URL}/storage/auth/token?storage_type=fal-cdn-v3``, then either one
``POST {base_url}/files/upload`` (``X-Fal-File-Name``; the answer's ``access_url`` is the file's
URL) or, above 100 MB, a multipart upload: ``POST {base_url}/files/upload/multipart`` ->
``{access_url, uploadId}``, one ``PUT {access_url}/multipart/{uploadId}/{n}`` per 10 MB part
(its ``ETag`` kept), then ``POST …/complete`` with ``{"parts": [{partNumber, etag}]}``.

Unlike fal_client, which reads a whole single upload (or part) into memory, every body is read
from the file a MiB at a time as it is sent: memory stays flat in the file's size (inputs may be
many GiB). Measured: 1 GiB through the multipart path peaks at the same RSS as 1 MiB. fal_client sends single uploads to its ``CDN_URL``
constant; this sends them to the token's ``base_url``, where it sends its multipart uploads.
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tasks.errors import AuthError, EndpointError, ErrorCode
from tasks.fal.client import UPLOADS, CallTrace, FalAnswer, FalClient, error_for
from tasks.run.cpu import to_thread
from tasks.storage.store import CHUNK

PART_CONCURRENCY = 4  # parts in flight at once (fal_client: 10)


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def part_count(size: int, part_bytes: int) -> int:
    return max(1, math.ceil(size / part_bytes))


def check_size(path: Path, size: int, limit: int) -> None:
    """Refuse, before anything is sent, a file fal's storage would not take (or we should not
    send): the message says how big it is and what the limit is."""
    if size > limit:
        raise EndpointError(
            f"{path.name} is {size / 1024**3:.2f} GiB, over the upload limit of "
            f"{limit / 1024**3:.2f} GiB (MATTEFLOW_FAL_UPLOAD_MAX_BYTES): put it on http(s) or "
            "s3:// instead, where fal reads it directly",
            code=ErrorCode.upload_too_large,
        )


async def file_chunks(
    path: Path, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """``length`` bytes of the file from ``offset`` (all of it by default), a chunk at a time,
    each read in a worker thread: a body streams from the disk, never held whole."""
    left = path.stat().st_size - offset if length is None else length
    with path.open("rb") as fh:
        fh.seek(offset)
        while left > 0:
            chunk = await to_thread(fh.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def refusal(resp: httpx.Response, what: str) -> EndpointError:
    """A refused upload: the key's own refusals stop the run (error_for), the rest fail the job
    with fal's message; 413 says the file is too large."""
    err = error_for(resp, what)
    if isinstance(err, AuthError):
        return err
    code = ErrorCode.upload_too_large if resp.status_code == 413 else ErrorCode.upload_failed
    return EndpointError(
        f"fal.ai {what} failed ({FalAnswer.of(resp).describe()})",
        code=code,
        status_code=resp.status_code,
        error_type=err.error_type,
        request_id=err.request_id,
    )


async def upload_file(client: FalClient, path: Path, *, trace: CallTrace | None = None) -> str:
    """Upload ``path`` to fal's CDN; returns the URL fal reads it from."""
    size = path.stat().st_size
    check_size(path, size, client.settings.upload_max_bytes)
    if size > client.settings.multipart_threshold_bytes:
        return await upload_multipart(client, path, size, trace=trace)
    return await upload_single(client, path, size, trace=trace)


async def upload_single(
    client: FalClient, path: Path, size: int, *, trace: CallTrace | None = None
) -> str:
    """One POST whose body streams from the file (a fresh stream per attempt)."""
    token = await client.cdn_token(trace=trace)
    url = f"{token.base_url.rstrip('/')}/files/upload"
    headers = {
        **token.header(),
        "Content-Type": content_type(path),
        "Content-Length": str(size),
        "X-Fal-File-Name": path.name,
    }
    resp = await client.call_with_retries(
        "upload",
        lambda: client.http.post(
            url, content=file_chunks(path), headers=headers, timeout=client.transfer_timeout()
        ),
        rules=UPLOADS,
        trace=trace,
    )
    if resp.status_code >= 300:
        raise refusal(resp, "upload")
    return access_url(resp, "upload")


def access_url(resp: httpx.Response, what: str) -> str:
    try:
        body: Any = resp.json()
        return str(body["access_url"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EndpointError(
            f"fal.ai {what} answered {resp.status_code} without an access_url",
            code=ErrorCode.upload_failed,
        ) from exc


async def upload_multipart(
    client: FalClient, path: Path, size: int, *, trace: CallTrace | None = None
) -> str:
    """Create the upload, send its parts (a few at a time), then complete it."""
    token = await client.cdn_token(trace=trace)
    ctype = content_type(path)
    created = await client.call_with_retries(
        "upload",
        lambda: client.http.post(
            f"{token.base_url.rstrip('/')}/files/upload/multipart",
            headers={**token.header(), "Content-Type": ctype, "X-Fal-File-Name": path.name},
        ),
        rules=UPLOADS,
        trace=trace,
    )
    if created.status_code >= 300:
        raise refusal(created, "upload")
    target = access_url(created, "upload")
    upload_id = str(created.json().get("uploadId", ""))
    base = f"{target}/multipart/{upload_id}"
    part_bytes = client.settings.part_bytes
    gate = asyncio.Semaphore(PART_CONCURRENCY)

    async def one(number: int) -> dict[str, Any]:
        async with gate:
            return await upload_part(client, path, base, number, part_bytes, ctype, trace)

    parts = await asyncio.gather(*(one(n) for n in range(1, part_count(size, part_bytes) + 1)))
    done = await client.call_with_retries(
        "upload",
        lambda: client.http.post(f"{base}/complete", json={"parts": parts}, headers=token.header()),
        rules=UPLOADS,
        trace=trace,
    )
    if done.status_code >= 300:
        raise refusal(done, "upload")
    return target


async def upload_part(
    client: FalClient,
    path: Path,
    base: str,
    number: int,
    part_bytes: int,
    ctype: str,
    trace: CallTrace | None,
) -> dict[str, Any]:
    """PUT one part, streamed from the file (again on each attempt); returns its
    ``{partNumber, etag}``."""
    offset = (number - 1) * part_bytes
    length = min(part_bytes, path.stat().st_size - offset)

    async def put() -> httpx.Response:
        token = await client.cdn_token(trace=trace)
        headers = {
            **token.header(),
            "Content-Type": ctype,
            "Content-Length": str(length),
            "Accept-Encoding": "identity",  # fal_client: keeps the ETag header
        }
        return await client.http.put(
            f"{base}/{number}",
            content=file_chunks(path, offset, length),
            headers=headers,
            timeout=client.transfer_timeout(),
        )

    resp = await client.call_with_retries("upload", put, rules=UPLOADS, trace=trace)
    etag = resp.headers.get("etag")
    if resp.status_code >= 300:
        raise refusal(resp, f"upload of part {number}")
    if not etag:
        raise EndpointError(
            f"fal.ai upload of part {number} answered without an ETag",
            code=ErrorCode.upload_failed,
        )
    return {"partNumber": number, "etag": etag}
