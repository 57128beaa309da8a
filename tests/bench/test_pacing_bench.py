"""The pacing benchmark's own parts still speak the fake's interface (nothing else runs them)."""

from __future__ import annotations

import asyncio
import http.server
from pathlib import Path

import pytest

from bench.pacing_bench import bare_client, make_fake


def test_bench_fake_runs_the_bare_client(
    tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # make_fake widens the listen backlog and quiets errors for the whole process: undo at teardown
    server = http.server.ThreadingHTTPServer
    monkeypatch.setattr(server, "request_queue_size", server.request_queue_size)
    monkeypatch.setattr(server, "handle_error", server.handle_error)
    fake = make_fake(tmp_path / "fake", latency_s=0.05, concurrency=2)
    try:
        url = fake.serve_file(clips["silent"])
        urls = [f"{url}?i={i}" for i in range(5)]
        out = tmp_path / "out"
        out.mkdir()
        result = asyncio.run(bare_client(fake.base_url, fake.key, urls, 2, out))
    finally:
        fake.stop()
    assert result["errors"] == 0
    assert len(list(out.iterdir())) == 5
    assert fake.peak_outstanding == 2 and fake.outstanding == 0
