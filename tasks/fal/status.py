"""Wait for a fal job: its status stream first, status polls when the stream fails.

fal's queue streams a job's status (``GET {status_url}/stream``, server-sent events, one JSON
status per ``data:`` line, the stream ends after ``COMPLETED``), as fal-js's ``streamStatus``
reads it: a completion is seen the moment fal sends it instead of at the next poll. Any stream
error (a refused or missing stream, a cut connection, a body that is not an event stream, a
stream that ends before ``COMPLETED``) falls back to polling for the rest of the job; a refusal
that says the stream does not exist here (404, 405, 501, not ``text/event-stream``) also turns
the stream off for the client's later jobs. A stream that stays silent for ``idle_s`` is checked
with one poll and opened again, so a long job costs a poll per ``idle_s``, not a poll per second.

The parser is a few lines over ``httpx``'s ``aiter_lines`` (the SSE framing fal uses: ``data:``
lines, blank-line separated; comments and other fields ignored) rather than a new dependency.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx

from tasks.errors import EndpointError, ErrorCode

UNAVAILABLE = frozenset({404, 405, 501})  # the stream does not exist here: stop asking for it
EVENT_STREAM = "text/event-stream"


class Status(Protocol):
    @property
    def done(self) -> bool: ...


S = TypeVar("S", bound=Status)
Sleep = Callable[[float], Awaitable[None]]
OnStatus = Callable[[Any], Awaitable[None]]


class StreamFailed(Exception):
    """The status stream could not be used for this job; ``unavailable``: nor for later ones."""

    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unavailable = unavailable


class StreamIdle(Exception):
    """No byte on the stream for ``idle_s``: check with a poll, then open it again."""


@dataclass
class StatusWatch:
    """How one job's completion was seen; kept in its ledger entry and results row.

    ``detect_delay_s`` bounds how long the completion went unseen: for a poll, the time since
    the previous answer that said "not done" (the job ended somewhere in between); for the
    stream, 0, because fal pushes the change as it happens (the benchmark measures the real
    delay at the fake server's end).
    """

    via: str = ""  # "stream" | "poll" | "stream>poll" (the stream failed, polls finished)
    polls: int = 0  # status GETs sent
    streams: int = 0  # stream connections opened
    stream_error: str | None = None
    detect_delay_s: float | None = None
    wait_s: float = 0.0

    def as_metrics(self) -> dict[str, Any]:
        return {
            "status_via": self.via,
            "status_polls": self.polls,
            "status_streams": self.streams,
            "stream_error": self.stream_error,
            "detect_delay_s": self.detect_delay_s,
            "status_wait_s": round(self.wait_s, 3),
        }


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


@dataclass
class StatusWatcher(Generic[S]):
    """The calls waiting needs, injected by the client (``FalClient.wait`` builds one)."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    poll_once: Callable[[], Awaitable[S]]
    parse: Callable[[Any], S]
    delay: Callable[[int], float]
    sleep: Sleep
    timeout_s: float
    idle_s: float = 30.0
    use_stream: bool = True

    async def wait(self, status_url: str, watch: StatusWatch, on_status: OnStatus | None) -> S:
        """The job's COMPLETED status; raises ``fal_timeout`` after ``timeout_s``."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout_s
        try:
            if self.use_stream:
                st = await self._by_stream(status_url, watch, on_status, deadline)
                if st is not None:
                    return st
            return await self._by_polls(watch, on_status, deadline)
        finally:
            watch.wait_s = time.monotonic() - t0

    async def _by_stream(
        self, status_url: str, watch: StatusWatch, on_status: OnStatus | None, deadline: float
    ) -> S | None:
        """COMPLETED from the stream, or None when polls must take over (``watch`` says why)."""
        while True:
            try:
                st = await self._stream_once(status_url, watch, on_status, deadline)
            except StreamIdle:
                st = await self._poll(watch, on_status, None)
                if st.done:
                    watch.via = "stream>poll"
                    return st
                self._check_deadline(deadline)
                continue
            except StreamFailed as exc:
                watch.stream_error = exc.reason
                if exc.unavailable:
                    self.use_stream = False
                watch.via = "stream>poll"
                return None
            watch.via, watch.detect_delay_s = "stream", 0.0
            return st

    async def _stream_once(
        self, status_url: str, watch: StatusWatch, on_status: OnStatus | None, deadline: float
    ) -> S:
        url = f"{status_url.rstrip('/')}/stream"
        idle = max(0.1, min(self.idle_s, deadline - time.monotonic()))
        timeout = httpx.Timeout(self.http.timeout.connect, read=idle, write=idle, pool=idle)
        headers = {**self.headers, "Accept": EVENT_STREAM}
        watch.streams += 1
        try:
            async with self.http.stream(
                "GET", url, params={"logs": "0"}, headers=headers, timeout=timeout
            ) as resp:
                refusal = stream_refusal(resp)
                if refusal is not None:
                    raise refusal
                async for data in sse_data(resp.aiter_lines()):
                    st = self._event(data)
                    if on_status is not None:
                        await on_status(st)
                    if st.done:
                        return st
                    self._check_deadline(deadline)
        except httpx.ReadTimeout as exc:
            if time.monotonic() >= deadline:
                self._check_deadline(deadline)
            raise StreamIdle() from exc
        except httpx.TransportError as exc:
            raise StreamFailed(f"stream: {type(exc).__name__}") from exc
        raise StreamFailed("stream ended before COMPLETED")

    def _event(self, data: str) -> S:
        try:
            return self.parse(json.loads(data))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise StreamFailed("stream: an event is not a status") from exc

    async def _by_polls(self, watch: StatusWatch, on_status: OnStatus | None, deadline: float) -> S:
        """Poll with growing, jittered delays until COMPLETED (the pre-stream behaviour)."""
        watch.via = watch.via or "poll"
        last_not_done: float | None = None
        n = 0
        while True:
            st = await self._poll(watch, on_status, last_not_done)
            if st.done:
                return st
            last_not_done = time.monotonic()
            self._check_deadline(deadline)
            await self.sleep(self.delay(n))
            n += 1

    async def _poll(
        self, watch: StatusWatch, on_status: OnStatus | None, last_not_done: float | None
    ) -> S:
        watch.polls += 1
        st = await self.poll_once()
        if on_status is not None:
            await on_status(st)
        if st.done and last_not_done is not None:
            watch.detect_delay_s = round(time.monotonic() - last_not_done, 3)
        elif st.done:
            watch.detect_delay_s = None  # the first answer said done: nothing to bound it by
        return st

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() >= deadline:
            raise EndpointError(
                f"fal.ai job not finished after {self.timeout_s:.0f} s", code=ErrorCode.fal_timeout
            )


def stream_refusal(resp: httpx.Response) -> StreamFailed | None:
    """Why a stream response cannot be read as status events, or None when it can."""
    if resp.status_code in UNAVAILABLE:
        return StreamFailed(f"stream: HTTP {resp.status_code}", unavailable=True)
    if resp.status_code >= 300:
        return StreamFailed(f"stream: HTTP {resp.status_code}")
    ctype = resp.headers.get("content-type", "")
    if not ctype.startswith(EVENT_STREAM):
        return StreamFailed(f"stream: answered {ctype or 'no content type'}", unavailable=True)
    return None
