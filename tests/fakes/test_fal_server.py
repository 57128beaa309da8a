"""The fake fal server keeps its promises: the account concurrency cap and its counters."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.fakes.fal_server import BIREFNET, PIXELCUT, FakeFal


def test_concurrency_cap_queue_and_counters(tmp_path: Path, clips: dict[str, Path]) -> None:
    with FakeFal(tmp_path, latency_s=0.3, concurrency=2) as fake:
        url = fake.serve_file(clips["silent"])
        auth = {"Authorization": f"Key {fake.key}"}
        with httpx.Client(headers=auth, timeout=10) as client:
            subs = [
                client.post(f"{fake.base_url}/{PIXELCUT}", json={"video_url": url}).json()
                for _ in range(5)
            ]
            states = [client.get(s["status_url"]).json()["status"] for s in subs]
            assert states.count("IN_QUEUE") >= 2
            deadline = time.monotonic() + 30
            while fake.completed < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            results = [client.get(s["response_url"]).json() for s in subs]
            assert fake.encodes == 1  # reuse_outputs: one encode for five identical jobs
            assert (
                client.post(f"{fake.base_url}/{BIREFNET}", json={"video_url": url}).status_code
                == 200
            )
            bad = client.post(
                f"{fake.base_url}/{PIXELCUT}", json={}, headers={"Authorization": "Key x"}
            )
        assert bad.status_code == 401
        assert fake.peak_in_progress == 2
        assert fake.accepted == {PIXELCUT: 5, BIREFNET: 1}
        assert len({r["video"]["url"] for r in results}) == 1
        stats = fake.stats()
        assert stats["accepted_total"] == 6 and stats["calls"]["submit:401"] == 1
