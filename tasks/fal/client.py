"""fal.ai queue client (httpx, async): submit, status, result, cancel, download, CDN token.

One layer owns each retry, and each kind of call has its own retry set (``RetrySet``):

* reads (status, result, file downloads) can never bill: transport errors and any 5xx are
  retried (fal-js retries 500 on status polls), as are 408/409/429;
* a submit retries only what cannot have queued a job: fal_client's 408/409/429, a gateway
  ("ingress") 502/503 without ``x-fal-request-id``, and transport errors before the request was
  sent. fal has no idempotency key, so once the request may have reached fal (a read timeout, a
  dropped connection after sending, a gateway 504, a 5xx from fal) it raises
  ``SubmitOutcomeUnknown``; a definite 4xx is a definite refusal;
* uploads (``tasks.fal.uploads``) retry any 5xx too: a repeat stores the same bytes again.

A 504 with ``X-Fal-Request-Timeout-Type`` is the caller's own deadline and is never retried
(fal_client's rule). Every error carries fal's message, ``X-Fal-Error-Type`` and request id.
The decisions are pure functions; the policy is ``tasks.retry.Backoff`` and the loop
``tasks.retry``'s, applied in ``call_with_retries``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
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
# The statuses fal's queue reports (fal_client's _parse_status raises on any other).
KNOWN_STATUSES = frozenset({"IN_QUEUE", "IN_PROGRESS", "COMPLETED"})
# Headers of fal's queue (fal docs, "Platform headers"; fal_client's _headers.py, whose newest
# version names the start timeout X-Fal-Request-Start-Timeout: the docs' name is used here).
START_TIMEOUT_HEADER = "X-Fal-Request-Timeout"
TIMEOUT_TYPE_HEADER = "X-Fal-Request-Timeout-Type"
PRIORITY_HEADER = "X-Fal-Queue-Priority"
NO_RETRY_HEADER = "x-fal-no-retry"
# A 403 whose message says one of these is about the key or the account: every job would get
# it, so the run stops (a locked account answers "User is locked. Reason: Exhausted balance…").
ACCOUNT_REFUSALS = (
    "locked",
    "invalid key",
    "invalid api key",
    "invalid credentials",
    "missing credentials",
    "key is invalid",
    "key has been revoked",
    "unauthorized",
    "not authenticated",
)


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
        "https://rest.fal.ai",
        validation_alias=AliasChoices("FAL_REST_URL", "MATTEFLOW_FAL_REST_URL"),
        description="Base URL of fal's REST API (the CDN upload token), as fal_client uses it.",
    )
    connect_timeout_s: float = Field(30.0, gt=0, description="TCP/TLS connect timeout.")
    timeout_s: float = Field(
        120.0, gt=0, description="Read/write timeout of API calls (fal_client's default_timeout)."
    )
    transfer_timeout_s: float = Field(300.0, gt=0, description="Read/write timeout of file bodies.")
    uploads: bool = Field(True, description="Upload local input files to fal's storage.")
    upload_max_bytes: int = Field(
        20 * 1024**3, gt=0, description="Refuse to upload a local input larger than this."
    )
    multipart_threshold_bytes: int = Field(
        100 * 1024**2, gt=0, description="Upload in parts above this size (fal_client: 100 MB)."
    )
    part_bytes: int = Field(
        10 * 1024**2, ge=5 * 1024**2, description="Size of one upload part (fal_client: 10 MB)."
    )
    start_timeout_s: float | None = Field(
        None,
        gt=1,
        description="X-Fal-Request-Timeout: fal gives up (unbilled) a job not started by then.",
    )
    priority: Literal["normal", "low"] | None = Field(
        None, description="X-Fal-Queue-Priority of submitted jobs."
    )
    no_retry: bool = Field(False, description="x-fal-no-retry: fal does not retry failed jobs.")
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


@dataclass(frozen=True)
class RetrySet:
    """Which answers of one kind of call are worth sending the same call again."""

    name: str
    statuses: frozenset[int] = RETRY_STATUSES
    any_5xx: bool = False  # a read can never bill: any server error is retried
    gateway_timeout: bool = True  # a gateway 504: False on a submit (the job may be queued)
    after_send: bool = True  # transport errors after the request left this machine


READS = RetrySet("read", any_5xx=True)  # status, result, file downloads
SUBMIT = RetrySet("submit", gateway_timeout=False, after_send=False)
CANCEL = RetrySet("cancel")  # fal_client's set: cancelling twice is harmless
UPLOADS = RetrySet("upload", any_5xx=True)  # a repeated upload stores the same bytes again


def is_ingress_error(status: int, headers: httpx.Headers) -> bool:
    """A 502/503/504 from fal's gateway rather than from fal itself (no ``x-fal-request-id``)."""
    return status in INGRESS_STATUSES and "x-fal-request-id" not in headers


def should_retry_status(status: int, headers: httpx.Headers, rules: RetrySet = READS) -> bool:
    """Whether an answer is a transient refusal worth repeating the same call for."""
    if status == 504 and TIMEOUT_TYPE_HEADER in headers:
        return False  # the deadline we asked for (X-Fal-Request-Timeout): honour it
    if status in rules.statuses or (rules.any_5xx and status >= 500):
        return True
    if not is_ingress_error(status, headers):
        return False
    return rules.gateway_timeout or status != 504


def should_retry_exception(exc: httpx.TransportError, rules: RetrySet = READS) -> bool:
    """Transport errors are retried, except on a submit that may already have reached fal."""
    return rules.after_send or isinstance(exc, NOT_SENT)


def stops_the_run(status: int, message: str) -> bool:
    """A 401, or a 403 that names the key or the account: every other job would get it too."""
    if status == 401:
        return True
    text = message.lower()
    return status == 403 and any(word in text for word in ACCOUNT_REFUSALS)


def submit_headers(settings: FalSettings) -> dict[str, str]:
    """The queue headers of a submit, from the run's options (fal docs, "Platform headers")."""
    headers: dict[str, str] = {}
    if settings.start_timeout_s is not None:
        headers[START_TIMEOUT_HEADER] = f"{settings.start_timeout_s:g}"
    if settings.priority is not None:
        headers[PRIORITY_HEADER] = settings.priority
    if settings.no_retry:
        headers[NO_RETRY_HEADER] = "1"
    return headers


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


def noter(trace: CallTrace | None, what: str) -> Callable[[int, BaseException, float], None]:
    """The retry loop's callback: each retried answer in the trace, with fal's request id."""

    def note(_: int, exc: BaseException, __: float) -> None:
        if trace is None:
            return
        if isinstance(exc, RetryResponse):
            rid = exc.response.headers.get("x-fal-request-id")
            event = f"{what}:{exc.response.status_code}" + (f":{rid}" if rid else "")
            trace.note(event, exc.error_type)
        else:
            trace.note(f"{what}:{type(exc).__name__}")

    return note


# -- models of fal's answers ------------------------------------------------------------------


class QueueStatus(BaseModel):
    status: str  # IN_QUEUE | IN_PROGRESS | COMPLETED (others are refused in ``status``)
    queue_position: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _no_metrics(cls, value: Any) -> Any:
        """Legacy apps send no metrics, or ``null`` (fal_client: ``data.get("metrics", {})``)."""
        return {} if value is None else value

    @property
    def done(self) -> bool:
        return self.status == "COMPLETED"


@dataclass
class CallTrace:
    """What happened on the wire for one job: retried statuses and fal's error types."""

    retries: int = 0
    events: list[str] = field(default_factory=list)
    error_types: list[str] = field(default_factory=list)
    submitted: bool = False  # this run submitted the job (what it may be billed for is its own)

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
    if isinstance(detail, dict) and "message" in detail:
        detail = detail["message"]
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


def _scrubbed(text: str, resp: httpx.Response) -> str:
    """``text`` without the credential its request carried (a server may echo it back)."""
    try:
        auth = resp.request.headers.get("authorization", "")
    except RuntimeError:  # a response built without its request
        return text
    secret = auth.partition(" ")[2].strip()
    return text.replace(secret, "***") if len(secret) >= 6 else text


@dataclass(frozen=True)
class FalAnswer:
    """What fal said in an error answer: its message, error type and request id."""

    status: int
    message: str
    error_type: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, resp: httpx.Response) -> FalAnswer:
        error_type = resp.headers.get("x-fal-error-type")
        if error_type is None:
            try:
                body = resp.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("error_type"), str):
                error_type = body["error_type"]
        message = _scrubbed(_detail(resp), resp)
        return cls(resp.status_code, message, error_type, resp.headers.get("x-fal-request-id"))

    def describe(self) -> str:
        """``HTTP 403, type T, request R: message`` (the parts fal sent)."""
        head = [f"HTTP {self.status}"]
        if self.error_type:
            head.append(f"X-Fal-Error-Type {self.error_type}")
        if self.request_id:
            head.append(f"request {self.request_id}")
        return f"{', '.join(head)}: {self.message}"


def error_for(resp: httpx.Response, what: str, *, api: bool = True) -> EndpointError:
    """Translate a non-2xx answer into the error tree (secrets never appear in messages).

    ``api``: the call carried the fal key, so a 401 (or a 403 naming the key or the account)
    means every job would fail the same way: ``AuthError`` stops the run. Other 403s (a CDN
    file's access control) fail this one job.
    """
    answer = FalAnswer.of(resp)
    status = resp.status_code
    fields: dict[str, Any] = dict(
        status_code=status, error_type=answer.error_type, request_id=answer.request_id
    )
    if api and stops_the_run(status, answer.message):
        return AuthError(f"fal.ai refused {what} ({answer.describe()})", **fields)
    codes = {401: ErrorCode.fal_forbidden, 403: ErrorCode.fal_forbidden}
    codes[422] = ErrorCode.fal_validation_error
    if status == 504 and TIMEOUT_TYPE_HEADER in resp.headers:
        codes[504] = ErrorCode.fal_start_timeout
    code = codes.get(status, ErrorCode.fal_http_error)
    return EndpointError(f"fal.ai {what} failed ({answer.describe()})", code=code, **fields)


class CdnToken(BaseModel):
    """fal's answer to ``storage/auth/token?storage_type=fal-cdn-v3`` (fal_client's CDNToken)."""

    token: str = Field(repr=False)
    token_type: str
    base_url: str
    expires_at: datetime

    def expired(self, now: datetime | None = None, margin_s: float = 60.0) -> bool:
        """Expired, or about to: a token is fetched again a minute early."""
        when = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=UTC)
        return (now or datetime.now(UTC)).timestamp() + margin_s >= when.timestamp()

    def header(self) -> dict[str, str]:
        return {"Authorization": f"{self.token_type} {self.token}"}


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
        self._token_lock = asyncio.Lock()
        self._cdn_token: CdnToken | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call_with_retries(
        self,
        what: str,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        rules: RetrySet = READS,
        trace: CallTrace | None = None,
    ) -> httpx.Response:
        """Apply ``rules`` around ``send``; return the first answer not worth repeating.

        A response worth repeating travels through the loop as ``RetryResponse``; a transport
        error on a submit that may have reached fal becomes ``SubmitOutcomeUnknown``, which the
        loop never repeats.
        """

        async def attempt() -> httpx.Response:
            try:
                resp = await send()
            except httpx.TransportError as exc:
                if not should_retry_exception(exc, rules):
                    raise SubmitOutcomeUnknown(
                        f"fal.ai {what}: {type(exc).__name__} after the request was sent; "
                        "fal may have queued (and will bill) the job"
                    ) from exc
                raise
            if should_retry_status(resp.status_code, resp.headers, rules):
                raise RetryResponse(resp)
            return resp

        try:
            return await acall_with_backoff(
                attempt,
                self.retry,
                transient=lambda exc: isinstance(exc, httpx.TransportError | RetryResponse),
                sleep=self.sleep,
                rng=self.rng,
                on_retry=noter(trace, what),
                retry_after=server_wait,
            )
        except RetryResponse as exc:
            answer = FalAnswer.of(exc.response)
            raise RetryableEndpointError(
                f"fal.ai {what}: still failing after {self.retry.attempts} attempts "
                f"({answer.describe()})",
                status_code=answer.status,
                error_type=answer.error_type,
                request_id=answer.request_id,
            ) from None
        except httpx.TransportError as exc:
            raise RetryableEndpointError(
                f"fal.ai {what}: {type(exc).__name__} after {self.retry.attempts} attempts"
            ) from exc

    async def submit(
        self, app: str, arguments: dict[str, Any], *, trace: CallTrace | None = None
    ) -> Submission:
        """Queue one job; raises ``SubmitOutcomeUnknown`` when fal may have taken it silently.

        A definite refusal (a 4xx) raises an ``EndpointError``: nothing was queued.
        """
        url = f"{self.settings.queue_url.rstrip('/')}/{app.strip('/')}"
        headers = {**self._auth, **submit_headers(self.settings)}
        resp = await self.call_with_retries(
            "submit",
            lambda: self.http.post(url, json=arguments, headers=headers),
            rules=SUBMIT,
            trace=trace,
        )
        if resp.status_code >= 500:
            answer = FalAnswer.of(resp)
            raise SubmitOutcomeUnknown(
                f"fal.ai submit answered {answer.describe()}; "
                "fal may have queued (and will bill) the job",
                status_code=resp.status_code,
                error_type=answer.error_type,
                request_id=answer.request_id,
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
                f"fal.ai does not know this request any more ({FalAnswer.of(resp).describe()})",
                code=ErrorCode.fal_request_not_found,
                status_code=404,
            )
        if resp.status_code >= 300:
            raise error_for(resp, "status")
        try:
            st = QueueStatus.model_validate(resp.json())
        except ValueError as exc:
            raise RetryableEndpointError("fal.ai status answer is not valid JSON") from exc
        if st.status not in KNOWN_STATUSES:
            raise EndpointError(
                f"fal.ai answered the unknown status {st.status[:40]!r} "
                f"(known: {', '.join(sorted(KNOWN_STATUSES))}); the request id is kept, "
                "so a later run polls it again",
                code=ErrorCode.fal_unknown_status,
                request_id=resp.headers.get("x-fal-request-id"),
            )
        return st

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
            "cancel", lambda: self.http.put(cancel_url, headers=self._auth), rules=CANCEL
        )
        if resp.status_code in (401, 403):
            raise error_for(resp, "cancel")
        try:
            return str(resp.json().get("status", resp.status_code))
        except ValueError:
            return str(resp.status_code)

    async def cdn_token(self, *, trace: CallTrace | None = None) -> CdnToken:
        """fal's CDN upload token (fal_client's CDNTokenManager), fetched again when expired."""
        async with self._token_lock:
            if self._cdn_token is None or self._cdn_token.expired():
                url = f"{self.settings.rest_url.rstrip('/')}/storage/auth/token"
                resp = await self.call_with_retries(
                    "upload token",
                    lambda: self.http.post(
                        url,
                        params={"storage_type": "fal-cdn-v3"},
                        json={},
                        headers=self._auth,
                    ),
                    rules=UPLOADS,
                    trace=trace,
                )
                if resp.status_code >= 300:
                    raise error_for(resp, "the upload token")
                self._cdn_token = CdnToken.model_validate(resp.json())
            return self._cdn_token

    async def download(
        self, url: str, dest: Path, *, trace: CallTrace | None = None
    ) -> tuple[int, str]:
        """Stream a result file from fal's CDN (no credentials sent); returns (bytes, sha256).

        A refusal (a CDN file's access control, a 404) fails this job only, with fal's message.
        """

        async def get() -> httpx.Response:
            digest = hashlib.sha256()
            size = 0
            async with self.http.stream("GET", url, timeout=self.transfer_timeout()) as resp:
                if resp.status_code < 300:
                    with dest.open("wb") as fh:
                        async for chunk in resp.aiter_bytes(CHUNK):
                            fh.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                    resp.extensions["matteflow"] = (size, digest.hexdigest())
                else:
                    await resp.aread()  # the error body: fal's message
                return resp

        resp = await self.call_with_retries("download", get, trace=trace)
        if resp.status_code >= 300:
            answer = FalAnswer.of(resp)
            raise EndpointError(
                f"download of {redact_url(url)} failed ({answer.describe()})",
                code=ErrorCode.fal_download_failed,
                status_code=resp.status_code,
                error_type=answer.error_type,
                request_id=answer.request_id,
            )
        size, sha = resp.extensions["matteflow"]
        return int(size), str(sha)

    def transfer_timeout(self) -> httpx.Timeout:
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
