"""fal.ai queue client (httpx, async): submit, status, result, cancel, upload, download.

One layer owns each retry: this client retries what fal_client retries (transport errors, 408,
409, 429, ingress 502/503/504), honouring ``Retry-After``. A submit is special because fal has
no idempotency key: once the request may have reached fal (a read timeout, a dropped connection
after sending, a gateway timeout), a repeat could be billed twice, so it raises
``SubmitOutcomeUnknown`` instead of retrying. The decisions are pure functions; the policy is
``tasks.retry.Backoff`` and the loop ``tasks.retry``'s, applied in ``call_with_retries``.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import (
    AuthError,
    EndpointError,
    ErrorCode,
    RetryableEndpointError,
    SubmitOutcomeUnknown,
)
from tasks.fal.status import StatusWatch, StatusWatcher
from tasks.ledger.handles import Submission
from tasks.retry import Backoff, acall_with_backoff
from tasks.storage.store import CHUNK, redact_url

RETRY_STATUSES = frozenset({408, 409, 429})
# An open status stream holds one of the pool's 100 connections for a whole job: past this many
# open at once, further jobs poll, so submits, results and downloads always find a connection.
MAX_STREAMS = 64
INGRESS_STATUSES = frozenset({502, 503, 504})
# Never sent: the request did not leave this machine, so repeating a submit is safe.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class FalSettings(BaseSettings):
    """fal connection settings from the environment; built at the flow's entry point."""

    model_config = SettingsConfigDict(
        env_prefix="MATTEFLOW_FAL_", extra="ignore", populate_by_name=True
    )

    key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("FAL_KEY", "MATTEFLOW_FAL_KEY"), description="API key."
    )
    queue_url: str = Field(
        "https://queue.fal.run",
        validation_alias=AliasChoices("FAL_QUEUE_URL", "MATTEFLOW_FAL_QUEUE_URL"),
        description="Base URL of fal's queue API.",
    )
    rest_url: str = Field(
        "https://rest.alpha.fal.ai",
        validation_alias=AliasChoices("FAL_REST_URL", "MATTEFLOW_FAL_REST_URL"),
        description="Base URL of fal's REST API (storage uploads), as fal_client uses it.",
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP/TLS connect timeout.")
    timeout_s: float = Field(30.0, gt=0, description="Read/write timeout of API calls.")
    transfer_timeout_s: float = Field(300.0, gt=0, description="Read/write timeout of file bodies.")
    uploads: bool = Field(True, description="Upload local input files to fal's storage.")
    presign_expiry_s: int = Field(
        6 * 3600, gt=60, description="Lifetime of presigned GET URLs given to fal for s3:// inputs."
    )
    max_attempts: int = Field(10, ge=1, le=50, description="Attempts per API call.")
    poll_initial_s: float = Field(0.5, gt=0, description="First status poll delay.")
    poll_max_s: float = Field(10.0, gt=0, description="Cap of the status poll delay.")
    job_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="Give up (and cancel) a job not finished after this long."
    )
    status_stream: bool = Field(
        True,
        description="Watch job status on fal's event stream (GET {status_url}/stream); "
        "polls take over on any stream error.",
    )
    stream_idle_s: float = Field(
        30.0, gt=0, description="A status stream silent this long is checked with one poll."
    )


@dataclass(frozen=True)
class PollPolicy:
    """Status polling: start near ``initial_s``, grow by ``factor`` up to ``max_s``, with jitter."""

    initial_s: float = 0.5
    factor: float = 1.5
    max_s: float = 10.0
    jitter: float = 0.2
    timeout_s: float = 6 * 3600.0


# -- pure decisions ---------------------------------------------------------------------------


def is_ingress_error(status: int, headers: httpx.Headers) -> bool:
    """A 502/503/504 from fal's gateway rather than from fal itself (no ``x-fal-request-id``)."""
    return status in INGRESS_STATUSES and "x-fal-request-id" not in headers


def should_retry_status(status: int, headers: httpx.Headers, *, submit: bool = False) -> bool:
    """Whether a response is a transient refusal worth repeating the same call for.

    On a submit, a gateway 504 may come after fal queued the job, so it is not repeated.
    """
    if status in RETRY_STATUSES:
        return True
    if submit and status == 504:
        return False
    return is_ingress_error(status, headers)


def should_retry_exception(exc: httpx.TransportError, *, submit: bool = False) -> bool:
    """Transport errors are retried, except on a submit that may already have reached fal."""
    return not submit or isinstance(exc, NOT_SENT)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def poll_delay(polls: int, policy: PollPolicy, rng: random.Random) -> float:
    """Delay before status poll ``polls + 1``; fal jobs take seconds to minutes."""
    delay = min(policy.max_s, policy.initial_s * policy.factor**polls)
    return max(0.0, delay * (1 + policy.jitter * rng.uniform(-1.0, 1.0)))


class RetryResponse(Exception):
    """A response worth repeating the call for, carried through the retry loop."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.error_type = response.headers.get("x-fal-error-type")


def server_wait(exc: BaseException) -> float | None:
    """The wait a refusing server asked for (``Retry-After``), if any."""
    if isinstance(exc, RetryResponse):
        return parse_retry_after(exc.response.headers.get("retry-after"))
    return None


# -- models of fal's answers ------------------------------------------------------------------


class QueueStatus(BaseModel):
    status: str  # IN_QUEUE | IN_PROGRESS | COMPLETED
    queue_position: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "COMPLETED"


@dataclass
class CallTrace:
    """What happened on the wire for one job: retried statuses and fal's error types."""

    retries: int = 0
    events: list[str] = field(default_factory=list)
    error_types: list[str] = field(default_factory=list)

    def note(self, event: str, error_type: str | None = None) -> None:
        self.retries += 1
        if len(self.events) < 50:
            self.events.append(event)
        if error_type and error_type not in self.error_types:
            self.error_types.append(error_type)


def _detail(resp: httpx.Response) -> str:
    """fal's message from an error body, bounded; a 422's detail names the field."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200].strip() or resp.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)[:500]
    return str(detail)[:500]


def error_for(resp: httpx.Response, what: str) -> EndpointError:
    """Translate a non-2xx answer into the error tree (secrets never appear in messages)."""
    status = resp.status_code
    error_type = resp.headers.get("x-fal-error-type")
    if status in (401, 403):
        return AuthError(
            f"fal.ai refused the API key on {what} (HTTP {status}): check FAL_KEY",
            status_code=status,
            error_type=error_type,
        )
    code = ErrorCode.fal_validation_error if status == 422 else ErrorCode.fal_http_error
    return EndpointError(
        f"fal.ai {what} failed (HTTP {status}): {_detail(resp)}",
        code=code,
        status_code=status,
        error_type=error_type,
    )


# -- the client -------------------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]


class FalClient:
    """fal's queue protocol over one ``httpx.AsyncClient``; build it with ``build_client``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: FalSettings,
        *,
        retry: Backoff | None = None,
        poll: PollPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.http = http
        self.settings = settings
        self.retry = retry or Backoff(attempts=settings.max_attempts, max_delay_s=10.0)
        self.poll = poll or PollPolicy(
            initial_s=settings.poll_initial_s,
            max_s=settings.poll_max_s,
            timeout_s=settings.job_timeout_s,
        )
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.stream_status = settings.status_stream  # off once fal says the stream is not there
        self.streams_open = 0
        key = settings.key.get_secret_value() if settings.key else ""
        self._auth = {"Authorization": f"Key {key}"}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call_with_retries(
        self,
        what: str,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        submit: bool = False,
        trace: CallTrace | None = None,
    ) -> httpx.Response:
        """Apply the retry decisions around ``send``; return the first non-retried response.

        A response worth repeating travels through the loop as ``RetryResponse``; a transport
        error on a submit that may have reached fal becomes ``SubmitOutcomeUnknown``, which the
        loop never repeats.
        """

        async def attempt() -> httpx.Response:
            try:
                resp = await send()
            except httpx.TransportError as exc:
                if not should_retry_exception(exc, submit=submit):
                    raise SubmitOutcomeUnknown(
                        f"fal.ai {what}: {type(exc).__name__} after the request was sent; "
                        "fal may have queued (and will bill) the job"
                    ) from exc
                raise
            if resp.status_code in (401, 403):
                raise error_for(resp, what)
            if should_retry_status(resp.status_code, resp.headers, submit=submit):
                raise RetryResponse(resp)
            return resp

        def note(_: int, exc: BaseException, __: float) -> None:
            if trace is None:
                return
            if isinstance(exc, RetryResponse):
                trace.note(f"{what}:{exc.response.status_code}", exc.error_type)
            else:
                trace.note(f"{what}:{type(exc).__name__}")

        try:
            return await acall_with_backoff(
                attempt,
                self.retry,
                transient=lambda exc: isinstance(exc, httpx.TransportError | RetryResponse),
                sleep=self.sleep,
                rng=self.rng,
                on_retry=note,
                retry_after=server_wait,
            )
        except RetryResponse as exc:
            raise RetryableEndpointError(
                f"fal.ai {what}: HTTP {exc.response.status_code} after "
                f"{self.retry.attempts} attempts",
                status_code=exc.response.status_code,
                error_type=exc.error_type,
            ) from None
        except httpx.TransportError as exc:
            raise RetryableEndpointError(
                f"fal.ai {what}: {type(exc).__name__} after {self.retry.attempts} attempts"
            ) from exc

    async def submit(
        self, app: str, arguments: dict[str, Any], *, trace: CallTrace | None = None
    ) -> Submission:
        """Queue one job; raises ``SubmitOutcomeUnknown`` when fal may have taken it silently."""
        url = f"{self.settings.queue_url.rstrip('/')}/{app.strip('/')}"
        resp = await self.call_with_retries(
            "submit",
            lambda: self.http.post(url, json=arguments, headers=self._auth),
            submit=True,
            trace=trace,
        )
        if resp.status_code >= 500:
            raise SubmitOutcomeUnknown(
                f"fal.ai submit answered HTTP {resp.status_code}: {_detail(resp)}; "
                "fal may have queued (and will bill) the job",
                status_code=resp.status_code,
                error_type=resp.headers.get("x-fal-error-type"),
            )
        if resp.status_code >= 300:
            raise error_for(resp, "submit")
        try:
            return Submission.model_validate(resp.json())
        except ValueError as exc:
            raise SubmitOutcomeUnknown(
                f"fal.ai submit answered {resp.status_code} without a request id"
            ) from exc

    async def status(self, status_url: str, *, trace: CallTrace | None = None) -> QueueStatus:
        resp = await self.call_with_retries(
            "status",
            lambda: self.http.get(status_url, params={"logs": "0"}, headers=self._auth),
            trace=trace,
        )
        if resp.status_code == 404:
            raise EndpointError(
                "fal.ai does not know this request any more (HTTP 404)",
                code=ErrorCode.fal_request_not_found,
                status_code=404,
            )
        if resp.status_code >= 300:
            raise error_for(resp, "status")
        try:
            return QueueStatus.model_validate(resp.json())
        except ValueError as exc:
            raise RetryableEndpointError("fal.ai status answer is not valid JSON") from exc

    async def wait(
        self,
        status_url: str,
        *,
        trace: CallTrace | None = None,
        on_status: Callable[[QueueStatus], Awaitable[None]] | None = None,
        watch: StatusWatch | None = None,
    ) -> QueueStatus:
        """Wait until COMPLETED: the status stream, polls when it fails (``tasks.fal.status``);
        raise after the job timeout. ``watch`` records how the completion was seen."""
        watcher = StatusWatcher(
            http=self.http,
            headers=self._auth,
            poll_once=lambda: self.status(status_url, trace=trace),
            parse=QueueStatus.model_validate,
            delay=lambda n: poll_delay(n, self.poll, self.rng),
            sleep=self.sleep,
            timeout_s=self.poll.timeout_s,
            idle_s=self.settings.stream_idle_s,
            use_stream=self.stream_status and self.streams_open < MAX_STREAMS,
        )
        streaming = watcher.use_stream
        self.streams_open += streaming
        try:
            return await watcher.wait(status_url, watch or StatusWatch(), on_status)
        finally:
            self.streams_open -= streaming
            if streaming and not watcher.use_stream:  # fal said the stream is not there
                self.stream_status = False

    async def result(self, response_url: str, *, trace: CallTrace | None = None) -> dict[str, Any]:
        resp = await self.call_with_retries(
            "result", lambda: self.http.get(response_url, headers=self._auth), trace=trace
        )
        if resp.status_code >= 300:
            raise error_for(resp, "result")
        try:
            body = resp.json()
        except ValueError as exc:
            raise RetryableEndpointError("fal.ai result is not valid JSON") from exc
        if not isinstance(body, dict):
            raise EndpointError("fal.ai result is not an object", code=ErrorCode.fal_bad_result)
        return body

    async def cancel(self, cancel_url: str) -> str:
        """Ask fal to drop a job; returns CANCELLATION_REQUESTED, ALREADY_COMPLETED or NOT_FOUND."""
        resp = await self.call_with_retries(
            "cancel", lambda: self.http.put(cancel_url, headers=self._auth)
        )
        try:
            return str(resp.json().get("status", resp.status_code))
        except ValueError:
            return str(resp.status_code)

    async def upload(self, path: Path, *, trace: CallTrace | None = None) -> str:
        """Put a local file on fal's storage (fal_client's initiate + PUT flow); returns its URL."""
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        initiate = f"{self.settings.rest_url.rstrip('/')}/storage/upload/initiate"
        resp = await self.call_with_retries(
            "upload",
            lambda: self.http.post(
                initiate,
                params={"storage_type": "fal-cdn-v3"},
                json={"file_name": path.name, "content_type": ctype},
                headers=self._auth,
            ),
            trace=trace,
        )
        if resp.status_code >= 300:
            raise error_for(resp, "upload")
        target = resp.json()
        upload_url, file_url = str(target["upload_url"]), str(target["file_url"])

        async def put() -> httpx.Response:
            # A fresh stream per attempt: a retried PUT must send the whole file again.
            with path.open("rb") as fh:
                return await self.http.put(
                    upload_url,
                    content=fh.read(),
                    headers={"Content-Type": ctype},
                    timeout=self._transfer_timeout(),
                )

        put_resp = await self.call_with_retries("upload", put, trace=trace)
        if put_resp.status_code >= 300:
            raise error_for(put_resp, "upload")
        return file_url

    async def download(
        self, url: str, dest: Path, *, trace: CallTrace | None = None
    ) -> tuple[int, str]:
        """Stream a result file from fal's CDN (no credentials sent); returns (bytes, sha256)."""

        async def get() -> httpx.Response:
            digest = hashlib.sha256()
            size = 0
            async with self.http.stream("GET", url, timeout=self._transfer_timeout()) as resp:
                if resp.status_code < 300:
                    with dest.open("wb") as fh:
                        async for chunk in resp.aiter_bytes(CHUNK):
                            fh.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                    resp.extensions["matteflow"] = (size, digest.hexdigest())
                return resp

        resp = await self.call_with_retries("download", get, trace=trace)
        if resp.status_code >= 300:
            raise EndpointError(
                f"download of {redact_url(url)} failed (HTTP {resp.status_code})",
                code=ErrorCode.fal_download_failed,
                status_code=resp.status_code,
            )
        size, sha = resp.extensions["matteflow"]
        return int(size), str(sha)

    def _transfer_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            self.settings.transfer_timeout_s, connect=self.settings.connect_timeout_s
        )


def build_client(
    settings: FalSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: Backoff | None = None,
    poll: PollPolicy | None = None,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> FalClient:
    """The one place a fal HTTP client is made; tests pass an ``httpx.MockTransport``."""
    if settings.key is None or not settings.key.get_secret_value().strip():
        raise AuthError("FAL_KEY is not set: export FAL_KEY=… to use the fal.ai endpoints")
    http = httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=True,
        headers={"Accept": "application/json", "User-Agent": "matteflow"},
    )
    return FalClient(http, settings, retry=retry, poll=poll, rng=rng, sleep=sleep)
