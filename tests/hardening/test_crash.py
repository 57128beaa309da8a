"""kill -9 the CLI at random points, then run it again: every row ends terminal, fal never got a
second job for a video (except submits recorded as ambiguous), and every output the ledger calls
done opens and verifies. No half-written file is ever visible under videos/."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.media.formats import OutputFormat, spec_for
from tasks.media.verify import Expectation, verify_output
from tasks.storage.store import sha256_file
from tests.fakes.cli import run_command
from tests.fakes.fal_server import PIXELCUT, FakeFal

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]
FAL_ROWS = 24
TERMINAL = {"succeeded", "skipped", "invalid", "failed", "failed_verification", "skipped_budget"}


def ledger(out: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted((out / "jobs").glob("*.json")):
        entries.append(json.loads(path.read_text()))  # whole or absent: writes are atomic
    return entries


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def kill_at_random(
    cmd: list[str], env: dict[str, str], out: Path, rng: random.Random, max_delay_s: float
) -> str:
    """Start a run and SIGKILL it a random while after it first wrote the ledger; returns where."""
    began = time.time()
    proc = start(cmd, env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        jobs = (out / "jobs").glob("*.json") if (out / "jobs").is_dir() else []
        if any(p.stat().st_mtime >= began for p in jobs):
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, max_delay_s))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        states = Counter(e["state"] for e in ledger(out))
        return f"killed with ledger {dict(states)}"
    output = proc.stdout.read().decode()[-2000:] if proc.stdout else ""
    return f"finished before the kill (rc {proc.returncode}): {output}"


def check_videos(out: Path, fmt: OutputFormat, frames: int) -> int:
    """Every output the ledger calls done verifies; nothing else is in videos/."""
    done = [e for e in ledger(out) if e["state"] == "succeeded"]
    spec = spec_for(fmt)
    for entry in done:
        path = out / entry["output_path"]
        assert path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]
        report = verify_output(path, Expectation(spec=spec, transparent=True, frames=frames))
        assert report.ok, (path, report.error)
    listed = sorted(p.name for p in (out / "videos").iterdir()) if (out / "videos").exists() else []
    assert listed == sorted(Path(e["output_path"]).name for e in done)
    return len(done)


def tally_kills(kills: list[str], tally: Counter[str]) -> int:
    """Print where each run was killed and add the kills to the tally; returns how many."""
    print("\n".join(kills))
    killed = sum(k.startswith("killed") for k in kills)
    tally["kill_9"] += killed
    return killed


def final_results(cmd: list[str], env: dict[str, str], out: Path, rows: int) -> pd.DataFrame:
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    csv = out / "runs" / "crash" / "results.csv"
    assert csv.exists(), rerun.stdout[-3000:] + rerun.stderr[-3000:]
    results = pd.read_csv(csv)
    assert len(results) == rows and set(results["status"]) <= TERMINAL
    bad = results[~results["status"].isin(["succeeded", "skipped"])]
    assert bad["error_code"].notna().all() and bad["error"].notna().all()
    return results


def test_kill_9_at_random_points_on_fal_loses_nothing(
    tmp_path: Path, clips: dict[str, Path], tally: Counter[str]
) -> None:
    from prefect.settings import PREFECT_API_URL

    rng = random.Random(20261121)
    with FakeFal(tmp_path / "fake", latency_s=0.6, concurrency=2) as fake:
        urls = [fake.serve_file(clips["silent"], f"c{i:02d}.mp4") for i in range(FAL_ROWS)]
        manifest = tmp_path / "m.csv"
        pd.DataFrame({"id": [f"c{i:02d}" for i in range(FAL_ROWS)], "video_url": urls}).to_csv(
            manifest, index=False
        )
        out = tmp_path / "out"
        env = {**os.environ, **fake.env(), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        cmd = run_command(manifest, out, "crash", "--endpoint", "pixelcut", "--max-in-flight", "4")
        kills: list[str] = []
        while sum(k.startswith("killed") for k in kills) < 5 and len(kills) < 8:
            kills.append(kill_at_random(cmd, env, out, rng, max_delay_s=1.2))
        assert tally_kills(kills, tally) >= 5, kills
        results = final_results(cmd, env, out, len(urls))
    tally["rows"] += len(results)
    unknown = set(results.loc[results["error_code"] == "submit_unknown", "video_url"])
    for url in urls:
        accepted = fake.accepted_inputs[(PIXELCUT, url)]
        # Never a second job; an ambiguous submit is at fal at most once, and reported.
        assert accepted <= 1, (url, accepted)
        if url not in unknown:
            assert accepted == 1
    ok = results[results["status"].isin(["succeeded", "skipped"])]
    assert len(ok) + len(unknown) == len(urls), results[["id", "status", "error_code"]]
    assert check_videos(out, OutputFormat.webm_vp9, frames=8) == len(ok)
    tally["rows_lost"] += len(urls) - len(results)


def test_kill_9_at_random_points_on_the_local_engine_loses_nothing(
    tmp_path: Path, clips: dict[str, Path], tally: Counter[str]
) -> None:
    from prefect.settings import PREFECT_API_URL

    rng = random.Random(7)
    manifest = tmp_path / "m.csv"
    names = [f"l{i}" for i in range(4)]
    pd.DataFrame(
        {"id": names, "video_url": [str(clips["person"])] * 4, "smoothing": [0.5, 0.6, 0.7, 0.8]}
    ).to_csv(manifest, index=False)
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    cmd = run_command(manifest, out, "crash", "--max-in-flight", "2")
    kills = [kill_at_random(cmd, env, out, rng, max_delay_s=1.5) for _ in range(2)]
    assert tally_kills(kills, tally) >= 1, kills
    results = final_results(cmd, env, out, len(names))
    tally["rows"] += len(results)
    assert set(results["status"]) <= {"succeeded", "skipped"}
    assert check_videos(out, OutputFormat.webm_vp9, frames=8) == len(names)
