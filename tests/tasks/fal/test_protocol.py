"""fal's protocol as fal's own clients speak it (issue 13): one test per difference found.

Sources: fal_client ``projects/fal_client/src/fal_client/client.py`` (retry rules, 120 s
timeouts, status parsing), fal-js ``QUEUE_STATUS_RETRY_CONFIG`` (500 retried on status polls),
fal docs "Platform headers" (X-Fal-Request-Timeout, X-Fal-Queue-Priority, x-fal-no-retry).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tasks.errors import AuthError, EndpointError, RetryableEndpointError, SubmitOutcomeUnknown
from tasks.fal.client import (
    READS,
    SUBMIT,
    UPLOADS,
    FalClient,
    FalSettings,
    PollPolicy,
    build_client,
    should_retry_status,
    stops_the_run,
    submit_headers,
)
from tasks.retry import Backoff
from tests.fakes.fal_server import PIXELCUT, FakeFal, Faults

SECRET = "sk-protocol-secret-9"
STATUS_URL = "http://fal.test/o/a/requests/r1/status"
SUBMITTED = {
    "request_id": "r1",
    "status_url": STATUS_URL,
    "response_url": "http://fal.test/o/a/requests/r1",
    "cancel_url": "http://fal.test/o/a/requests/r1/cancel",
}
FAL_500 = {"x-fal-request-id": "req-500", "X-Fal-Error-Type": "internal_server_error"}


def mock(answers: list[httpx.Response], **kw: Any) -> tuple[FalClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    async def sleep(_: float) -> None:
        return None

    # These answers are for polls: the status stream (issue 16) has tests of its own.
    values = {
        "key": SecretStr(SECRET),
        "queue_url": "http://fal.test",
        "status_stream": False,
        **kw,
    }
    client = build_client(
        FalSettings.model_validate(values),
        transport=httpx.MockTransport(handler),
        rng=random.Random(0),
        sleep=sleep,
    )
    return client, seen


# -- 1. reads retry any 5xx; a submit does not ---------------------------------------------


async def test_status_poll_500_with_request_id_is_retried() -> None:
    client, seen = mock(
        [
            httpx.Response(500, json={"detail": "Internal Server Error"}, headers=FAL_500),
            httpx.Response(502, json={"detail": "bad"}, headers={"x-fal-request-id": "r"}),
            httpx.Response(200, json={"status": "COMPLETED", "metrics": {}}),
        ]
    )
    assert (await client.status(STATUS_URL)).done and len(seen) == 3
    await client.aclose()


async def test_result_and_download_retry_5xx() -> None:
    client, seen = mock(
        [httpx.Response(500, headers=FAL_500), httpx.Response(200, json={"video": {"url": "u"}})]
    )
    assert await client.result(SUBMITTED["response_url"]) == {"video": {"url": "u"}}
    assert len(seen) == 2
    await client.aclose()


async def test_submit_500_is_unknown_not_repeated_and_names_the_request() -> None:
    client, seen = mock([httpx.Response(500, json={"detail": "boom"}, headers=FAL_500)])
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await client.submit("o/a", {})
    assert len(seen) == 1
    assert "req-500" in str(info.value) and "internal_server_error" in str(info.value)
    assert info.value.request_id == "req-500"
    await client.aclose()


async def test_submit_definite_4xx_is_definite() -> None:
    client, seen = mock([httpx.Response(400, json={"detail": "body is not JSON"})])
    with pytest.raises(EndpointError) as info:
        await client.submit("o/a", {})
    assert not isinstance(info.value, SubmitOutcomeUnknown | AuthError)
    assert info.value.code == "fal_http_error" and "body is not JSON" in str(info.value)
    assert len(seen) == 1
    await client.aclose()


def test_user_deadline_504_is_never_retried() -> None:
    headers = httpx.Headers({"X-Fal-Request-Timeout-Type": "user"})
    for rules in (READS, SUBMIT, UPLOADS):
        assert not should_retry_status(504, headers, rules)


async def test_retries_exhausted_keep_fals_answer() -> None:
    client, seen = mock([httpx.Response(503, json={"detail": "busy"}, headers=FAL_500)])
    with pytest.raises(RetryableEndpointError) as info:
        await client.status(STATUS_URL)
    assert len(seen) == client.retry.attempts
    assert "req-500" in str(info.value) and "busy" in str(info.value)
    await client.aclose()


# -- 3. fal's own message; which refusals stop the run -------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "stops"),
    [
        (401, "Invalid or missing credentials", True),
        (403, "User is locked. Reason: Exhausted balance. Top up your balance", True),
        (403, "Invalid API key", True),
        (403, "Access denied: this file is private", False),
        (403, "Forbidden", False),
        (404, "Not found", False),
    ],
)
def test_stops_the_run(status: int, message: str, stops: bool) -> None:
    assert stops_the_run(status, message) is stops


async def test_a_plain_403_on_submit_fails_that_job_only_with_fals_message() -> None:
    client, _ = mock(
        [
            httpx.Response(
                403,
                json={"detail": "App not enabled for this key"},
                headers={"x-fal-request-id": "q1", "X-Fal-Error-Type": "forbidden"},
            )
        ]
    )
    with pytest.raises(EndpointError) as info:
        await client.submit("o/a", {})
    assert not isinstance(info.value, AuthError) and info.value.code == "fal_forbidden"
    text = str(info.value)
    assert "App not enabled for this key" in text and "q1" in text and "forbidden" in text
    await client.aclose()


async def test_error_type_from_the_body_when_no_header() -> None:
    body = {"detail": "runner went away", "error_type": "runner_disconnected"}
    client, _ = mock([httpx.Response(400, json=body)])
    with pytest.raises(EndpointError) as info:
        await client.result(SUBMITTED["response_url"])
    assert info.value.error_type == "runner_disconnected"
    assert "runner_disconnected" in str(info.value)
    await client.aclose()


# -- 6. timeouts as fal_client's -----------------------------------------------------------


def test_timeouts_are_fal_clients() -> None:
    client, _ = mock([httpx.Response(200)])
    timeout = client.http.timeout
    assert timeout.read == timeout.write == timeout.pool == 120.0
    assert FalSettings.model_fields["timeout_s"].default == 120.0
    assert FalSettings.model_fields["rest_url"].default == "https://rest.fal.ai"


# -- 8. queue headers as run options -------------------------------------------------------


def test_submit_headers_from_the_run_options() -> None:
    none = FalSettings.model_validate({"key": SecretStr(SECRET)})
    assert submit_headers(none) == {}
    full = none.model_copy(update={"start_timeout_s": 600.0, "priority": "low", "no_retry": True})
    assert submit_headers(full) == {
        "X-Fal-Request-Timeout": "600",
        "X-Fal-Queue-Priority": "low",
        "x-fal-no-retry": "1",
    }


async def test_submit_sends_the_queue_headers() -> None:
    client, seen = mock(
        [httpx.Response(200, json=SUBMITTED)],
        start_timeout_s=30.5,
        priority="low",
        no_retry=True,
    )
    await client.submit("o/a", {})
    headers = seen[0].headers
    assert headers["x-fal-request-timeout"] == "30.5"
    assert headers["x-fal-queue-priority"] == "low" and headers["x-fal-no-retry"] == "1"
    await client.aclose()


# -- 10. null metrics, unknown statuses ----------------------------------------------------


async def test_null_metrics_are_no_metrics() -> None:
    client, _ = mock([httpx.Response(200, json={"status": "COMPLETED", "metrics": None})])
    st = await client.status(STATUS_URL)
    assert st.done and st.metrics == {}
    await client.aclose()


async def test_an_unknown_status_fails_at_once() -> None:
    client, seen = mock([httpx.Response(202, json={"status": "PAUSED"})])
    with pytest.raises(EndpointError) as info:
        await client.wait(STATUS_URL)
    assert info.value.code == "fal_unknown_status" and "PAUSED" in str(info.value)
    assert len(seen) == 1  # not polled until the job timeout
    await client.aclose()


# -- against the fake ----------------------------------------------------------------------


def live(fake: FakeFal, **kw: Any) -> FalClient:
    values = {"key": SecretStr(fake.key), "queue_url": fake.base_url, "rest_url": fake.base_url}
    return build_client(
        FalSettings.model_validate({**values, **kw}),
        retry=Backoff(attempts=10, base_delay_s=0.01, max_delay_s=0.05),
        poll=PollPolicy(initial_s=0.02, max_s=0.1),
    )


class FirstCalls(Faults):
    """The first ``count`` calls of each kind named fail with the fault given for it."""

    def __init__(self, kinds: dict[str, str], count: int) -> None:
        super().__init__()
        self.left = {call: count for call in kinds}
        self.fault = kinds

    def pick(self, call: str) -> str | None:
        if self.left.get(call, 0) <= 0:
            return None
        self.left[call] -= 1
        return self.fault[call]


async def test_fake_status_500s_are_retried_and_submits_503s_too(
    fake_fal: FakeFal, clips: dict[str, Path]
) -> None:
    fake_fal.faults = FirstCalls({"submit": "503", "status": "500"}, count=3)
    client = live(fake_fal, status_stream=False)  # the polls are what this test fails
    url = fake_fal.serve_file(clips["person"])
    sub = await client.submit(PIXELCUT, {"video_url": url})
    st = await client.wait(sub.status_url)
    assert st.done and st.error is None
    assert fake_fal.calls[("status", 500)] == 3 and fake_fal.calls[("submit", 503)] == 3
    assert fake_fal.accepted[PIXELCUT] == 1
    await client.aclose()


async def test_fake_cdn_403_is_a_download_failure_not_an_auth_stop(
    fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    url = fake_fal.serve_file(clips["person"], "private.mp4")
    fake_fal.forbid_output_inputs.add("private.mp4")
    client = live(fake_fal)
    sub = await client.submit(PIXELCUT, {"video_url": url})
    await client.wait(sub.status_url)
    result = await client.result(sub.response_url)
    with pytest.raises(EndpointError) as info:
        await client.download(result["video"]["url"], tmp_path / "o.webm")
    assert not isinstance(info.value, AuthError)
    assert info.value.code == "fal_download_failed" and info.value.status_code == 403
    assert "this file is private" in str(info.value)
    await client.aclose()


async def test_fake_start_timeout_gives_the_job_up_unbilled(
    fake_fal: FakeFal, clips: dict[str, Path]
) -> None:
    fake_fal.runners_free.clear()  # no runner is free: the job waits in the queue
    client = live(fake_fal, start_timeout_s=1.5)
    url = fake_fal.serve_file(clips["person"])
    with_deadline = await client.submit(PIXELCUT, {"video_url": url})
    fake_fal.jobs[with_deadline.request_id].start_timeout_s = 0.0  # its deadline has passed
    fake_fal.runners_free.set()
    st = await client.wait(with_deadline.status_url)
    assert st.done
    with pytest.raises(EndpointError) as info:
        await client.result(with_deadline.response_url)
    assert info.value.code == "fal_start_timeout"
    assert fake_fal.submit_headers[0]["x-fal-request-timeout"] == "1.5"
    assert fake_fal.calls[("result", 504)] == 1  # never retried
    assert fake_fal.ran_inputs[(PIXELCUT, url)] == 0  # no runner took it: nothing billed
    await client.aclose()
