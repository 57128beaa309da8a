"""Ctrl-C in ``matteflow run``: fal jobs cancelled, partial report written, exit code 130."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.fakes.cli import run_command
from tests.fakes.fal_server import FakeFal

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ctrl_c_cancels_queued_fal_jobs_and_writes_the_partial_report(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    with FakeFal(tmp_path / "fake", latency_s=1.0, concurrency=2) as fake:
        urls = [fake.serve_file(clips["silent"], f"v{i}.mp4") for i in range(10)]
        manifest = tmp_path / "m.csv"
        pd.DataFrame({"id": range(10), "video_url": urls}).to_csv(manifest, index=False)
        env = dict(os.environ, **fake.env())
        env.update(MATTEFLOW_FAL_POLL_INITIAL_S="0.05", MATTEFLOW_FAL_POLL_MAX_S="0.1")
        env.pop("PREFECT_API_URL", None)  # the CLI's own temporary server, as a user would run it
        out = tmp_path / "out"
        cli = subprocess.Popen(
            run_command(manifest, out, "c", "--endpoint", "pixelcut", "--max-in-flight", "5"),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while sum(j.state == "IN_QUEUE" for j in fake.jobs.values()) < 3:
                assert cli.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            cli.send_signal(signal.SIGINT)
            output, _ = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
        assert cli.returncode == 130, output[-2000:]
        assert "run the same command again" in output
        assert [j for j in fake.jobs.values() if j.state == "IN_QUEUE"] == []
        assert fake.cancelled == sum(fake.accepted.values()) == 5  # 2 running + 3 queued
        results = pd.read_csv(out / "runs" / "c" / "results.csv")
        assert len(results) == 10 and set(results["status"]) == {"cancelled"}
        assert results["error"].notna().all()
        assert "Crashed" not in output  # task runs end with a cancelled row, not a crash
