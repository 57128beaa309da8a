"""Waiting for fal jobs: the status stream, and the fall back to polls when it fails."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tasks.fal.client import FalSettings, PollPolicy, build_client
from tasks.fal.job import FalRunner, run_fal_job
from tasks.fal.status import StatusWatch, sse_data
from tasks.ledger.jobs import Ledger
from tasks.ledger.results import ResultRow
from tasks.retry import Backoff
from tasks.storage.store import Storage
from tests.fakes.fal_server import PIXELCUT, FakeFal
from tests.tasks.fal.test_job import make_job


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_sse_parser_reads_data_lines_and_skips_the_rest() -> None:
    lines = _lines(
        ": a comment",
        "event: status",
        'data: {"status": "IN_QUEUE",',
        'data:  "queue_position": 2}',
        "id: 7",
        "",
        "retry: 100",
        'data: {"status": "COMPLETED"}\r',
        "",
        'data: {"status": "tail"}',
    )
    got = [d async for d in sse_data(lines)]
    assert got == [
        '{"status": "IN_QUEUE",\n "queue_position": 2}',
        '{"status": "COMPLETED"}',
        '{"status": "tail"}',
    ]


def _ok(row: ResultRow) -> None:
    assert row["status"] == "succeeded", row
    assert row["verified"] and row["has_alpha"] and row["frames"] == 8
    assert row["cpu_s"] is not None and row["cpu_s"] > 0
    assert row["verify_s"] is not None and row["verify_s"] >= 0


async def test_completion_is_seen_on_the_stream_without_a_poll(
    fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path, runner: FalRunner
) -> None:
    fake_fal.latency_s = 0.3
    storage = Storage(str(tmp_path / "out"))
    url = fake_fal.serve_file(clips["person"])
    row = await run_fal_job(make_job(url, "pixelcut"), storage, runner)
    _ok(row)
    assert (row["status_via"], row["status_polls"], row["detect_delay_s"]) == ("stream", 0, 0.0)
    assert fake_fal.calls[("stream", 200)] == 1
    assert not any(kind == "status" for kind, _ in fake_fal.calls)
    entry = Ledger(storage).get(row["job_key"])
    assert entry is not None and entry.metrics["status_via"] == "stream"
    assert entry.metrics["status_streams"] == 1 and entry.metrics["cpu_s"] > 0
    # The fake saw the client learn of the completion well before a 0.1 s poll would.
    assert fake_fal.stats()["detect_delay_s"]["n"] == 1


async def test_refused_stream_falls_back_to_polls_and_is_not_asked_again(
    fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path, runner: FalRunner
) -> None:
    fake_fal.status_stream = "off"
    storage = Storage(str(tmp_path / "out"))
    url = fake_fal.serve_file(clips["person"])
    row = await run_fal_job(make_job(url, "pixelcut"), storage, runner)
    _ok(row)
    assert row["status_via"] == "stream>poll" and row["status_polls"] >= 1
    entry = Ledger(storage).get(row["job_key"])
    assert entry is not None and entry.metrics["stream_error"] == "stream: HTTP 404"
    assert not runner.client.stream_status  # the stream is not there: later jobs only poll
    second = await run_fal_job(make_job(url + "?2", "pixelcut", "b"), storage, runner)
    _ok(second)
    assert second["status_via"] == "poll"
    assert fake_fal.calls[("stream", 404)] == 1


async def test_stream_cut_mid_job_ends_with_polls_and_the_right_row(
    fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path, runner: FalRunner
) -> None:
    fake_fal.status_stream = "cut"
    fake_fal.latency_s = 0.3
    storage = Storage(str(tmp_path / "out"))
    url = fake_fal.serve_file(clips["person"])
    row = await run_fal_job(make_job(url, "pixelcut"), storage, runner)
    _ok(row)
    assert row["status_via"] == "stream>poll" and row["status_polls"] >= 1
    assert row["request_id"] and fake_fal.accepted[PIXELCUT] == 1  # waited, never resubmitted
    entry = Ledger(storage).get(row["job_key"])
    assert entry is not None and entry.metrics["stream_error"].startswith("stream")
    assert fake_fal.calls[("stream", 0)] == 1  # the fake dropped it after one event
    assert runner.client.stream_status  # a cut is this job's bad luck, not a missing stream


async def test_silent_stream_is_checked_with_a_poll_and_opened_again(
    fake_fal: FakeFal, clips: dict[str, Path]
) -> None:
    fake_fal.latency_s = 0.6
    settings = FalSettings.model_validate(
        {
            "key": SecretStr(fake_fal.key),
            "queue_url": fake_fal.base_url,
            "rest_url": fake_fal.base_url,
            "stream_idle_s": 0.2,
        }
    )
    client = build_client(
        settings, retry=Backoff(attempts=3, base_delay_s=0.01), poll=PollPolicy(initial_s=0.05)
    )
    sub = await client.submit(PIXELCUT, {"video_url": fake_fal.serve_file(clips["person"])})
    watch = StatusWatch()
    st = await client.wait(sub.status_url, watch=watch)
    assert st.done and st.error is None
    assert watch.streams >= 2 and watch.polls >= 1 and watch.stream_error is None
    await client.aclose()


async def test_a_body_that_is_not_an_event_stream_turns_the_stream_off() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/stream"):
            return httpx.Response(200, html="<html>proxy</html>")
        return httpx.Response(200, json={"status": "COMPLETED", "metrics": {}})

    settings = FalSettings.model_validate({"key": SecretStr("k"), "queue_url": "http://fal.test"})
    client = build_client(settings, transport=httpx.MockTransport(handler))
    watch = StatusWatch()
    st = await client.wait("http://fal.test/o/a/requests/r/status", watch=watch)
    assert st.done and watch.via == "stream>poll" and watch.polls == 1
    assert watch.stream_error is not None and "text/html" in watch.stream_error
    assert not client.stream_status
    await client.wait("http://fal.test/o/a/requests/r/status")
    assert calls.count("/o/a/requests/r/status/stream") == 1
    await client.aclose()


async def test_stream_can_be_switched_off(fake_fal: FakeFal) -> None:
    settings = FalSettings.model_validate(
        {"key": SecretStr(fake_fal.key), "queue_url": fake_fal.base_url, "status_stream": False}
    )
    client = build_client(settings, poll=PollPolicy(initial_s=0.02))
    sub = await client.submit(PIXELCUT, {"video_url": fake_fal.base_url + "/files/x/y.mp4"})
    watch = StatusWatch()
    await client.wait(sub.status_url, watch=watch)
    assert watch.via == "poll" and watch.streams == 0
    assert not any(kind == "stream" for kind, _ in fake_fal.calls)
    await client.aclose()


async def test_past_the_stream_cap_jobs_poll_so_the_pool_keeps_connections(
    fake_fal: FakeFal, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from tasks.fal import client as client_module

    monkeypatch.setattr(client_module, "MAX_STREAMS", 2)
    fake_fal.latency_s = 0.3
    settings = FalSettings.model_validate(
        {"key": SecretStr(fake_fal.key), "queue_url": fake_fal.base_url}
    )
    client = build_client(settings, poll=PollPolicy(initial_s=0.05, max_s=0.1))
    subs = [
        await client.submit(PIXELCUT, {"video_url": fake_fal.base_url + f"/files/x/{i}.mp4"})
        for i in range(4)
    ]
    watches = [StatusWatch() for _ in subs]
    await asyncio.gather(
        *(client.wait(s.status_url, watch=w) for s, w in zip(subs, watches, strict=True))
    )
    assert sorted(w.via for w in watches) == ["poll", "poll", "stream", "stream"]
    assert client.streams_open == 0 and client.stream_status
    await client.aclose()


async def test_work_a_job_does_in_threads_counts_in_its_cpu_s(
    fake_fal: FakeFal,
    clips: dict[str, Path],
    storage: Storage,
    runner: FalRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ledger reads before and under the claim run in threads: both count, not only the first."""
    import tasks.fal.job as fal_job

    real = fal_job.reusable

    def costly(*args: object) -> bool:
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.3:  # 0.3 s of this thread's CPU, whatever the load
            pass
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fal_job, "reusable", costly)
    url = fake_fal.serve_file(clips["person"])
    row = await run_fal_job(make_job(url, "pixelcut"), storage, runner)
    _ok(row)
    assert row["cpu_s"] >= 0.6, row["cpu_s"]
