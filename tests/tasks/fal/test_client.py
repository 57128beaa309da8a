"""fal client: pure retry decisions, the retry loop on MockTransport, the protocol on the fake."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tasks.errors import AuthError, EndpointError, RetryableEndpointError, SubmitOutcomeUnknown
from tasks.fal.client import (
    READS,
    SUBMIT,
    FalClient,
    FalSettings,
    PollPolicy,
    build_client,
    parse_retry_after,
    poll_delay,
    should_retry_exception,
    should_retry_status,
)
from tasks.fal.uploads import upload_file
from tasks.retry import Backoff, backoff_delay
from tests.fakes.fal_server import BIREFNET, PIXELCUT, FakeFal, Faults

SECRET = "sk-very-secret-123"
NO_HEADERS = httpx.Headers()
FAL_HEADERS = httpx.Headers({"x-fal-request-id": "r1"})


def settings(**kw: Any) -> FalSettings:
    values: dict[str, Any] = {"key": SecretStr(SECRET), "queue_url": "http://fal.test"}
    values.update(kw)
    return FalSettings.model_validate(values)


# -- pure decisions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "submit", "expected"),
    [
        (408, NO_HEADERS, False, True),
        (409, NO_HEADERS, True, True),
        (429, FAL_HEADERS, True, True),
        (502, NO_HEADERS, False, True),  # ingress
        (503, NO_HEADERS, True, True),  # ingress refused it: nothing queued
        (504, NO_HEADERS, False, True),
        (504, NO_HEADERS, True, False),  # a gateway timeout may come after the job was queued
        (503, FAL_HEADERS, True, False),  # on a submit fal's own 503 may follow a queued job
        (500, NO_HEADERS, True, False),
        (500, FAL_HEADERS, False, True),  # a read can never bill: fal's own 500 is retried
        (503, FAL_HEADERS, False, True),
        (422, NO_HEADERS, False, False),
        (401, NO_HEADERS, False, False),
        (403, NO_HEADERS, False, False),
    ],
)
def test_should_retry_status(
    status: int, headers: httpx.Headers, submit: bool, expected: bool
) -> None:
    assert should_retry_status(status, headers, SUBMIT if submit else READS) is expected


def test_transport_errors_retry_except_a_submit_that_may_have_arrived() -> None:
    req = httpx.Request("POST", "http://fal.test/x")
    connect = httpx.ConnectError("refused", request=req)
    read = httpx.ReadTimeout("slow", request=req)
    dropped = httpx.RemoteProtocolError("disconnected", request=req)
    assert should_retry_exception(read) and should_retry_exception(dropped)
    assert should_retry_exception(connect, SUBMIT)
    assert not should_retry_exception(read, SUBMIT)
    assert not should_retry_exception(dropped, SUBMIT)


def test_retry_after_seconds_and_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:07 GMT", now) == 7.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_retry_delay_grows_to_cap_and_honours_retry_after() -> None:
    policy = Backoff(base_delay_s=0.5, max_delay_s=10.0, jitter=0.0, max_retry_after_s=60)
    rng = random.Random(1)
    delays = [backoff_delay(n, policy, rng) for n in range(1, 8)]
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert delays[-1] == 10.0
    assert backoff_delay(1, policy, rng, retry_after=4.0) == 4.0
    assert backoff_delay(1, policy, rng, retry_after=999.0) == 60.0


def test_poll_delay_starts_near_half_a_second_caps_at_ten_and_jitters() -> None:
    policy = PollPolicy(initial_s=0.5, factor=1.5, max_s=10.0, jitter=0.2)
    rng = random.Random(2)
    first = [poll_delay(0, policy, rng) for _ in range(50)]
    assert 0.4 <= min(first) < max(first) <= 0.6
    assert all(8.0 <= poll_delay(30, policy, rng) <= 12.0 for _ in range(20))


# -- the retry loop on MockTransport -----------------------------------------------------


def mock_client(handler: Any, **kw: Any) -> tuple[FalClient, list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    client = build_client(
        settings(**kw), transport=httpx.MockTransport(handler), rng=random.Random(0), sleep=sleep
    )
    return client, slept


SUBMITTED = {
    "request_id": "r1",
    "status_url": "http://fal.test/o/a/requests/r1/status",
    "response_url": "http://fal.test/o/a/requests/r1",
    "cancel_url": "http://fal.test/o/a/requests/r1/cancel",
}


async def test_submit_retries_429_with_retry_after_then_succeeds() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "2", "X-Fal-Error-Type": "rate_limited"}),
        httpx.Response(503, text="<html>nginx</html>"),
        httpx.Response(200, json=SUBMITTED),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    client, slept = mock_client(handler)
    from tasks.fal.client import CallTrace

    trace = CallTrace()
    sub = await client.submit("o/a", {"video_url": "http://x/v.mp4"}, trace=trace)
    assert sub.request_id == "r1"
    assert len(seen) == 3 and slept[0] == 2.0
    assert seen[0].headers["Authorization"] == f"Key {SECRET}"
    assert trace.error_types == ["rate_limited"] and trace.retries == 2
    await client.aclose()


async def test_submit_read_timeout_is_unknown_and_not_repeated() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    client, _ = mock_client(handler)
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await client.submit("o/a", {"video_url": "u"})
    assert len(calls) == 1 and info.value.code == "submit_unknown"
    await client.aclose()


async def test_submit_connect_error_is_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=SUBMITTED)

    client, slept = mock_client(handler)
    assert (await client.submit("o/a", {})).request_id == "r1"
    assert len(calls) == 3 and len(slept) == 2
    await client.aclose()


async def test_status_gives_up_after_max_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset", request=request)

    client, slept = mock_client(handler, max_attempts=4)
    with pytest.raises(RetryableEndpointError):
        await client.status("http://fal.test/o/a/requests/r1/status")
    assert len(slept) == 3
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (401, "bad key"),
        (403, "User is locked. Reason: Exhausted balance. Top up your balance"),
        (403, "Invalid API key"),
    ],
)
async def test_auth_errors_stop_at_once_and_name_no_secret(status: int, detail: str) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"detail": f"{detail} {SECRET}"})

    client, _ = mock_client(handler)
    with pytest.raises(AuthError) as info:
        await client.submit("o/a", {})
    assert len(calls) == 1
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert info.value.code == "auth_error" and info.value.status_code == status
    assert detail in str(info.value)  # fal's own message, not "check FAL_KEY"
    await client.aclose()


def test_missing_key_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="FAL_KEY is not set"):
        build_client(FalSettings.model_validate({"key": None}))


def test_settings_from_env_keep_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", SECRET)
    monkeypatch.setenv("FAL_QUEUE_URL", "http://127.0.0.1:9")
    s = FalSettings()
    assert s.queue_url == "http://127.0.0.1:9"
    assert s.key is not None and s.key.get_secret_value() == SECRET
    assert SECRET not in repr(s) and SECRET not in s.model_dump_json()


async def test_validation_error_names_the_field() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        detail = [{"loc": ["body", "video_url"], "msg": "cannot decode", "type": "x"}]
        return httpx.Response(422, json={"detail": detail}, headers={"X-Fal-Error-Type": "val"})

    client, _ = mock_client(handler)
    with pytest.raises(EndpointError) as info:
        await client.result("http://fal.test/o/a/requests/r1")
    assert info.value.code == "fal_validation_error"
    assert "video_url: cannot decode" in str(info.value)
    assert info.value.error_type == "val"
    await client.aclose()


# -- the protocol against the fake server ------------------------------------------------


def live_client(fake: FakeFal, **kw: Any) -> FalClient:
    s = FalSettings.model_validate(
        {"key": SecretStr(fake.key), "queue_url": fake.base_url, "rest_url": fake.base_url, **kw}
    )
    return build_client(
        s, retry=Backoff(attempts=10, base_delay_s=0.01, max_delay_s=0.05), poll=FAST_POLL
    )


FAST_POLL = PollPolicy(initial_s=0.02, max_s=0.1)


async def test_round_trip_both_apps_with_faults(
    fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    fake_fal.faults = Faults(rate=0.3, calls=("status", "result", "file", "upload"), seed=3)
    client = live_client(fake_fal)
    url = await upload_file(client, clips["person"])
    for app, args in [
        (PIXELCUT, {"video_url": url, "output_format": "webm_vp9"}),
        (BIREFNET, {"video_url": url, "video_output_type": "VP9 (.webm)", "output_mask": True}),
    ]:
        sub = await client.submit(app, args)
        st = await client.wait(sub.status_url)
        assert st.done and st.error is None and "inference_time" in st.metrics
        result = await client.result(sub.response_url)
        size, sha = await client.download(result["video"]["url"], tmp_path / "out.webm")
        assert size == result["video"]["file_size"] and len(sha) == 64
    assert fake_fal.accepted == {PIXELCUT: 1, BIREFNET: 1}
    assert sum(fake_fal.injected.values()) > 0
    await client.aclose()


async def test_dropped_submit_after_accept_is_unknown(fake_fal: FakeFal) -> None:
    fake_fal.drop_after_accept = 1
    client = live_client(fake_fal)
    with pytest.raises(SubmitOutcomeUnknown):
        await client.submit(PIXELCUT, {"video_url": fake_fal.base_url + "/files/x/y.mp4"})
    assert fake_fal.accepted[PIXELCUT] == 1
    await client.aclose()


async def test_submit_read_timeout_on_a_slow_server_is_unknown(fake_fal: FakeFal) -> None:
    fake_fal.hang_s = 0.5
    client = live_client(fake_fal, timeout_s=0.1)
    with pytest.raises(SubmitOutcomeUnknown):
        await client.submit(PIXELCUT, {"video_url": "x"})
    fake_fal.hang_s = 0.0
    await client.aclose()


async def test_job_error_and_422_and_cancel(fake_fal: FakeFal, clips: dict[str, Path]) -> None:
    url = fake_fal.serve_file(clips["person"])
    bad, broken = fake_fal.serve_file(clips["person"], "bad.mp4"), url
    fake_fal.reject_inputs.add("bad.mp4")
    fake_fal.fail_inputs.add(broken)
    client = live_client(fake_fal)
    sub = await client.submit(PIXELCUT, {"video_url": broken})
    st = await client.wait(sub.status_url)
    assert st.error and st.error_type == "runner_error"
    sub = await client.submit(PIXELCUT, {"video_url": bad})
    await client.wait(sub.status_url)
    with pytest.raises(EndpointError) as info:
        await client.result(sub.response_url)
    assert info.value.code == "fal_validation_error" and "video_url" in str(info.value)
    assert await client.cancel(sub.cancel_url) == "ALREADY_COMPLETED"
    await client.aclose()


async def test_locked_account_raises_auth_error(fake_fal: FakeFal) -> None:
    fake_fal.locked = "User is locked. Reason: Exhausted balance."
    client = live_client(fake_fal)
    with pytest.raises(AuthError, match="User is locked"):
        await client.submit(PIXELCUT, {"video_url": "x"})
    assert fake_fal.accepted[PIXELCUT] == 0
    await client.aclose()


async def test_status_timeouts_and_ingress_errors_are_retried() -> None:
    answers: list[Exception | httpx.Response] = [
        httpx.ReadTimeout("slow"),
        httpx.Response(504, text="<html>gateway</html>"),
        httpx.Response(408),
        httpx.Response(200, json={"status": "COMPLETED", "metrics": {"inference_time": 1.5}}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise httpx.ReadTimeout(str(answer), request=request)
        return answer

    client, slept = mock_client(handler)
    st = await client.status("http://fal.test/o/a/requests/r1/status")
    assert st.done and st.metrics == {"inference_time": 1.5} and len(slept) == 3
    await client.aclose()
