"""Paid once across processes (issue 12), each against the fake fal on loopback:

* two overlapping ``matteflow run`` processes on one output (local folder, SeaweedFS S3): every
  row of both ends terminal, and fal ran exactly one job per video;
* Ctrl-C while jobs run at a fal that lets them finish, then a re-run: every row done, one job
  run per video;
* kill -9 once jobs completed at fal, results expired before the re-run: rows whose result body
  was saved are completed from the saved URLs, the others end ``fal_result_expired``; nothing is
  submitted again.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tasks.storage.store import Storage
from tests.fakes.cli import run_command
from tests.fakes.fal_server import PIXELCUT, FakeFal
from tests.fakes.seaweed import SeaweedS3, s3_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]
DONE = {"succeeded", "skipped"}


def environment(fake: FakeFal, base: dict[str, str] | None = None) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {**(base or os.environ), **fake.env(), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env.update(
        MATTEFLOW_FAL_POLL_INITIAL_S="0.05",
        MATTEFLOW_FAL_POLL_MAX_S="0.2",
        MATTEFLOW_CLAIM_POLL_S="0.2",
    )
    return env


def manifest(fake: FakeFal, clip: Path, tmp: Path, names: list[str]) -> tuple[Path, list[str]]:
    urls = [fake.serve_file(clip, f"{name}.mp4") for name in names]
    path = tmp / "m.csv"
    pd.DataFrame({"id": names, "video_url": urls}).to_csv(path, index=False)
    return path, urls


def start(
    path: Path, out: str, run_name: str, env: dict[str, str], in_flight: int = 4
) -> subprocess.Popen[str]:
    cmd = run_command(
        path, out, run_name, "--endpoint", "pixelcut", "--max-in-flight", str(in_flight)
    )
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def results(storage: Storage, run_name: str, output: str = "") -> pd.DataFrame:
    data = storage.read_bytes(f"runs/{run_name}/results.csv")
    assert data is not None, output[-3000:]
    return pd.read_csv(io.BytesIO(data))


def one_job_per_video(fake: FakeFal, urls: list[str]) -> None:
    for url in urls:
        assert fake.ran_inputs[(PIXELCUT, url)] == 1, (url, fake.stats())
        assert fake.accepted_inputs[(PIXELCUT, url)] == 1, (url, fake.stats())


def overlapping_runs(fake: FakeFal, clip: Path, tmp: Path, out: str, env: dict[str, str]) -> None:
    storage = Storage(out)
    names = [f"v{i:02d}" for i in range(12)]
    path, urls = manifest(fake, clip, tmp, names)
    first = start(path, out, "nightly", env, in_flight=2)
    wait_for(lambda: sum(fake.accepted.values()) >= 1, first)
    second = start(path, out, "by-hand", env)  # pressed Run while the nightly one still runs
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    tables = [results(storage, n, o) for n, o in zip(("nightly", "by-hand"), outputs, strict=True)]
    for table in tables:
        assert len(table) == len(names), table
        assert set(table["status"]) <= DONE, table[["id", "status", "error_code", "error"]]
    # They overlapped: the second run worked on jobs before the first one finished its last.
    assert tables[1]["started_at"].min() < tables[0]["finished_at"].max()
    one_job_per_video(fake, urls)


def test_two_overlapping_runs_on_a_local_folder_pay_once(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with FakeFal(tmp_path / "fal", latency_s=2.0, concurrency=2) as fake:
        out = str(tmp_path / "out")
        overlapping_runs(fake, clips["silent"], tmp_path, out, environment(fake))
    claims = list((tmp_path / "out" / "claims").glob("*.json"))
    assert len(claims) == 12 and not any(json.loads(c.read_text())["held"] for c in claims)


@pytest.mark.integration
def test_two_overlapping_runs_on_s3_pay_once(
    tmp_path: Path, clips: dict[str, Path], seaweed: SeaweedS3, s3_bucket: str
) -> None:
    with FakeFal(tmp_path / "fal", latency_s=2.0, concurrency=2) as fake:
        env = environment(fake, s3_env(seaweed))
        out = f"{s3_bucket}/catalog"
        os.environ.setdefault("MATTEFLOW_S3_ENDPOINT_URL", seaweed.endpoint_url)
        overlapping_runs(fake, clips["silent"], tmp_path, out, env)


@dataclass
class Interrupted:
    """A first run sent Ctrl-C while two of its jobs ran at fal."""

    path: Path
    urls: list[str]
    out: str
    env: dict[str, str]
    run: subprocess.Popen[str]

    def rerun(self) -> pd.DataFrame:
        """The same command again, to its end: its results table."""
        rerun = start(self.path, self.out, "second", self.env)
        output = rerun.communicate(timeout=300)[0]
        return results(Storage(self.out), "second", output)


def interrupted(fake: FakeFal, clip: Path, tmp: Path, rows: int, in_flight: int) -> Interrupted:
    path, urls = manifest(fake, clip, tmp, [f"c{i}" for i in range(rows)])
    out, env = str(tmp / "out"), environment(fake)
    run = start(path, out, "first", env, in_flight)
    wait_for(lambda: fake.in_progress == 2, run)
    run.send_signal(signal.SIGINT)
    return Interrupted(path, urls, out, env, run)


def test_ctrl_c_with_jobs_running_then_a_rerun_pays_once(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with FakeFal(tmp_path / "fal", latency_s=1.5, concurrency=2) as fake:
        first_run = interrupted(fake, clips["silent"], tmp_path, 6, in_flight=4)
        output = first_run.run.communicate(timeout=120)[0]
        assert first_run.run.returncode == 130, output[-3000:]
        first = results(Storage(first_run.out), "first", output)
        assert set(first["status"]) == {"cancelled"} and first["error"].notna().all()
        assert first["error"].str.contains("despite the cancel").sum() == 2, first["error"]
        second = first_run.rerun()
    assert set(second["status"]) <= DONE and len(second) == 6, second
    never_ran = set(first.loc[first["error"].str.contains("before it ran"), "video_url"])
    for url in first_run.urls:
        assert fake.ran_inputs[(PIXELCUT, url)] == 1, (url, fake.stats())
        assert fake.accepted_inputs[(PIXELCUT, url)] == (2 if url in never_ran else 1)


def test_a_second_ctrl_c_quits_at_once_and_the_rerun_pays_once(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with FakeFal(tmp_path / "fal", latency_s=4.0, concurrency=2) as fake:
        first = interrupted(fake, clips["silent"], tmp_path, 4, in_flight=2)
        time.sleep(0.5)  # the running jobs keep going: the run follows them
        assert first.run.poll() is None
        first.run.send_signal(signal.SIGINT)
        output = first.run.communicate(timeout=30)[0]
        assert first.run.returncode == 130, output[-3000:]
        assert "second Ctrl-C: stopping now" in output
        assert fake.in_progress == 2  # it left while fal still ran them
        second = first.rerun()
    assert set(second["status"]) <= DONE and len(second) == 4, second
    one_job_per_video(fake, first.urls)


def test_kill_9_after_completion_with_results_expired_before_the_rerun(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with FakeFal(tmp_path / "fal", concurrency=4) as fake:
        names = ["saved0", "saved1", "lost0", "lost1"]
        path, urls = manifest(fake, clips["silent"], tmp_path, names)
        out, env = tmp_path / "out", environment(fake)
        fake.stall_results, fake.stall_files = {"lost"}, True
        run = start(path, str(out), "killed", env)

        def saved() -> int:
            entries = [json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")]
            return sum(e["state"] == "completed" for e in entries)

        wait_for(lambda: fake.completed == 4 and saved() == 2, run)
        run.send_signal(signal.SIGKILL)
        run.wait(30)
        fake.result_ttl_s = 0.0  # fal dropped every result before the re-run
        fake.stall_results, fake.stall_files = set(), False
        rerun = start(path, str(out), "rerun", env)
        output = rerun.communicate(timeout=300)[0]
        table = results(Storage(str(out)), "rerun", output).set_index("id")
    assert set(table.loc[["saved0", "saved1"], "status"]) == {"succeeded"}, table
    lost = table.loc[["lost0", "lost1"]]
    assert set(lost["status"]) == {"failed"} and set(lost["error_code"]) == {"fal_result_expired"}
    assert lost["request_id"].notna().all()
    assert all(rid in err for rid, err in zip(lost["request_id"], lost["error"], strict=True))
    one_job_per_video(fake, urls)
