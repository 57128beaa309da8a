"""The flow on the fal endpoints against the fake server: faults, a kill mid-run, auth errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.errors import AuthError
from tests.fakes.cli import run_command
from tests.fakes.fal_server import PIXELCUT, FakeFal, Faults
from tests.fakes.runs import pixelcut_params, write_manifest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_fifty_rows_with_transient_faults(
    prefect_server: None, fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    from flows.removal import remove_backgrounds

    # On submits only HTTP refusals: a dropped submit is "unknown" by design (tested elsewhere).
    fake_fal.faults = Faults(rate=0.2, kinds=("429", "503"), calls=("submit",), seed=7)
    urls = [fake_fal.serve_file(clips["silent"], f"v{i:02d}.mp4") for i in range(50)]
    rows = [{"id": f"v{i:02d}", "video_url": u, "output_format": ""} for i, u in enumerate(urls)]
    rows[3]["output_format"] = "mp4_h264"  # transparent + H.264: invalid, never sent
    rows[4]["output_format"] = "bogus"  # invalid
    rows[5]["video_url"] = urls[6]  # rows 6 and 7 name the same video: one job
    fake_fal.fail_inputs.add("v10.mp4")
    fake_fal.reject_inputs.add("v11.mp4")
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"

    async def run() -> dict[str, object]:
        params = pixelcut_params(manifest, out, "r1", max_in_flight=8)
        return await remove_backgrounds(params)

    # Faults on every other kind of call, at the same rate, for the rest of the run.
    faults = Faults(rate=0.2, calls=("status", "result", "file", "upload", "cancel"), seed=8)
    submit_faults = fake_fal.faults

    class Mixed(Faults):
        def pick(self, call: str) -> str | None:
            return (submit_faults if call == "submit" else faults).pick(call)

    fake_fal.faults = Mixed()
    summary = await run()
    results = pd.read_csv(out / "runs" / "r1" / "results.csv")
    assert len(results) == 50
    terminal = {"succeeded", "invalid", "failed"}
    assert set(results["status"]) <= terminal
    by_id = results.set_index("id")
    assert by_id.loc["v03", "status"] == by_id.loc["v04", "status"] == "invalid"
    assert by_id.loc["v10", "error_code"] == "fal_job_error"
    assert by_id.loc["v11", "error_code"] == "fal_validation_error"
    assert by_id.loc["v06", "duplicate_of"] == by_id.loc["v05", "row"]
    valid_urls = {u for i, u in enumerate(urls) if i not in (3, 4, 5)}
    assert sum(fake_fal.accepted_inputs.values()) == len(valid_urls) == 47
    assert all(fake_fal.accepted_inputs[(PIXELCUT, u)] == 1 for u in valid_urls)
    assert fake_fal.injected["429"] + fake_fal.injected["503"] + fake_fal.injected["drop"] > 20
    ok = results[results["status"] == "succeeded"]
    assert len(ok) == 46  # 47 jobs + 1 duplicate row - 2 failed
    for _, r in ok.iterrows():
        assert Path(r["output_url"]).stat().st_size == r["bytes"]
        assert r["verified"] and r["frames"] == 8
    assert ok["cost_usd"].sum() == pytest.approx(0.022 * 45)  # the duplicate row costs 0
    assert summary["totals"]["cost_usd"] == pytest.approx(0.022 * 45)  # type: ignore[index]

    # A second run reuses everything and submits nothing.
    fake_fal.faults = Faults()
    before = sum(fake_fal.accepted.values())
    await run()
    again = pd.read_csv(out / "runs" / "r1" / "results.csv")
    assert (again["status"] == "skipped").sum() == 46  # 45 jobs and the duplicate row
    assert sum(fake_fal.accepted.values()) == before


async def test_auth_error_stops_the_run(
    prefect_server: None, fake_fal: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    from flows.removal import remove_backgrounds

    fake_fal.locked = "User is locked. Reason: Exhausted balance. Top up at fal.ai"
    urls = [fake_fal.serve_file(clips["silent"], f"a{i}.mp4") for i in range(6)]
    manifest = write_manifest(tmp_path / "m.csv", [{"video_url": u} for u in urls])
    params = pixelcut_params(manifest, tmp_path / "o", "locked", max_in_flight=1)
    with pytest.raises(AuthError) as info:
        await remove_backgrounds(params)
    assert fake_fal.key not in str(info.value)
    assert "User is locked. Reason: Exhausted balance" in str(info.value)
    assert sum(fake_fal.accepted.values()) == 0
    # The report is written before the run stops: the refused job says why, the jobs not
    # started end cancelled with fal's reason.
    results = pd.read_csv(tmp_path / "o" / "runs" / "locked" / "results.csv")
    assert len(results) == 6
    failed = results[results["status"] == "failed"]
    assert list(failed["error_code"]) == ["auth_error"]
    cancelled = results[results["status"] == "cancelled"]
    assert len(cancelled) >= 3
    assert all("User is locked" in e for e in cancelled["error"]), list(cancelled["error"])


def ledger_states(out: Path) -> list[dict[str, object]]:
    states = []
    for path in (out / "jobs").glob("*.json"):
        try:
            states.append(json.loads(path.read_text()))
        except (ValueError, OSError):
            continue  # a file mid-write
    return states


@pytest.mark.slow
def test_killed_run_resumes_without_double_submits(
    prefect_server: None, tmp_path: Path, clips: dict[str, Path]
) -> None:
    from prefect.settings import PREFECT_API_URL

    with FakeFal(tmp_path / "fake", latency_s=1.5, concurrency=2) as fake:
        urls = [fake.serve_file(clips["silent"], f"k{i}.mp4") for i in range(8)]
        manifest = write_manifest(tmp_path / "m.csv", [{"video_url": u} for u in urls])
        out = tmp_path / "out"
        env = {**os.environ, **fake.env(), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        cmd = run_command(manifest, out, "kill", "--endpoint", "pixelcut", "--max-in-flight", "4")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        killed_with: list[dict[str, object]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            states = ledger_states(out)
            if sum(1 for s in states if s.get("request_id")) >= 3:
                proc.send_signal(signal.SIGKILL)
                killed_with = states
                break
            time.sleep(0.05)
        proc.wait(30)
        assert killed_with, proc.stdout.read().decode()[-3000:] if proc.stdout else "no output"
        done_at_kill = sum(1 for s in killed_with if s["state"] == "succeeded")
        assert done_at_kill < len(urls)  # it really died mid-run
        accepted_at_kill = sum(fake.accepted.values())

        rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        results = pd.read_csv(out / "runs" / "kill" / "results.csv")
        assert len(results) == len(urls), rerun.stdout[-3000:] + rerun.stderr[-3000:]
        # Never a second job for the same video.
        assert all(n == 1 for n in fake.accepted_inputs.values()), fake.accepted_inputs
        # Jobs accepted before the kill were resumed by request_id, not resubmitted.
        resumed = {str(s["request_id"]) for s in killed_with if s.get("request_id")}
        assert resumed <= set(results["request_id"].dropna())
        assert sum(fake.accepted.values()) >= accepted_at_kill
        # Nothing lost: every row succeeded, except a submit the kill left in doubt (reported).
        unknown = results[results["error_code"] == "submit_unknown"]
        assert (
            (results["status"] == "succeeded") | (results["error_code"] == "submit_unknown")
        ).all()
        assert len(unknown) <= 4  # at most the submits in flight at the kill (max_in_flight)
        for _, r in unknown.iterrows():
            assert fake.accepted_inputs[(PIXELCUT, r["video_url"])] <= 1
        assert rerun.returncode == (0 if unknown.empty else 1)
