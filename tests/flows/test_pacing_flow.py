"""Catalog-scale behaviour of the flow against the fake fal server: cap, budget, cancel, rerun.

No wall-clock thresholds: what is checked is what the fake server saw (peak jobs in progress,
jobs accepted, jobs left queued) and what the results table says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.params import RunParams
from tests.fakes.fal_server import PIXELCUT, FakeFal

PRICE = 0.022  # pixelcut: $0.022 per 30 frames; the test clips have 8 frames


@contextmanager
def account(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, latency_s: float, concurrency: int
) -> Iterator[FakeFal]:
    """A fake account of ``concurrency`` jobs in progress, each taking ``latency_s``; the run's
    fal settings point at it and poll fast."""
    with FakeFal(workdir, latency_s=latency_s, concurrency=concurrency) as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MATTEFLOW_FAL_POLL_INITIAL_S", "0.05")
        monkeypatch.setenv("MATTEFLOW_FAL_POLL_MAX_S", "0.1")
        yield fake


@pytest.fixture
def fal_account(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeFal]:
    """A fake account allowing 10 jobs in progress, each taking 0.3 s; fast polling."""
    with account(tmp_path_factory.mktemp("account"), monkeypatch, 0.3, 10) as fake:
        yield fake


def catalog(fake: FakeFal, clip: Path, path: Path, n: int, tag: str = "v") -> Path:
    urls = [fake.serve_file(clip, f"{tag}{i:03d}.mp4") for i in range(n)]
    pd.DataFrame({"id": [f"{tag}{i:03d}" for i in range(n)], "video_url": urls}).to_csv(
        path, index=False
    )
    return path


def params(manifest: Path, out: Path, **kw: Any) -> RunParams:
    values: dict[str, Any] = dict(
        manifest=str(manifest), endpoint="pixelcut", output=str(out), run_name="r"
    )
    values.update(kw)
    return RunParams.model_validate(values)


def results(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "runs" / "r" / "results.csv")


async def test_in_flight_cap_holds_under_load(
    prefect_server: None, fal_account: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    from flows.removal import remove_backgrounds

    manifest = catalog(fal_account, clips["silent"], tmp_path / "m.csv", 24)
    summary = await remove_backgrounds(params(manifest, tmp_path / "out", max_in_flight=3))
    assert summary["counts"]["succeeded"] == 24
    # The account would run 10 at once; matteflow never had more than 3 there, and used all 3.
    assert fal_account.peak_in_progress == 3
    assert summary["pacing"]["peak_in_flight"] == 3
    assert summary["pacing"]["task_run_per_job"] is True  # small run: one task run per job
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        progress = await client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["progress"]))
        )
    assert progress and progress[0].data == 100.0  # the progress artifact ended at 100 %
    assert "24 of 24 jobs finished" in str(progress[0].description)


async def test_budget_exhaustion_mid_run_skips_the_rest(
    prefect_server: None, fal_account: FakeFal, clips: dict[str, Path], tmp_path: Path
) -> None:
    from flows.removal import remove_backgrounds

    manifest = catalog(fal_account, clips["silent"], tmp_path / "m.csv", 8)
    out = tmp_path / "out"
    budget = 3 * PRICE + 0.01  # three jobs fit, the fourth does not
    summary = await remove_backgrounds(
        params(manifest, out, max_in_flight=2, budget_usd=budget, task_run_per_job=False)
    )
    table = results(out)
    assert sorted(table["status"]) == ["skipped_budget"] * 5 + ["succeeded"] * 3
    skipped = table[table["status"] == "skipped_budget"]
    assert set(skipped["error_code"]) == {"budget_exceeded"}
    assert all("budget" in str(e) for e in skipped["error"])
    assert sum(fal_account.accepted.values()) == 3  # nothing past the budget reached fal
    assert summary["budget"]["spent_usd"] == pytest.approx(3 * PRICE)
    assert summary["budget"]["left_usd"] == pytest.approx(budget - 3 * PRICE)
    cost = pd.read_csv(out / "runs" / "r" / "cost_report.csv")
    total = cost[cost["endpoint"] == "TOTAL"].iloc[0]
    assert total["budget_usd"] == pytest.approx(budget)
    assert total["budget_left_usd"] == pytest.approx(budget - 3 * PRICE)


def queued(fake: FakeFal) -> list[str]:
    return [job.id for job in fake.jobs.values() if job.state == "IN_QUEUE"]


async def test_cancel_mid_run_then_rerun_completes_the_rest(
    prefect_server: None, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C path: the flow's task is cancelled while fal has jobs queued and in progress."""
    from flows.removal import remove_backgrounds

    # An account of 2 in progress and a cap of 5: three of ours wait IN_QUEUE at fal.
    with account(tmp_path / "fake", monkeypatch, latency_s=1.0, concurrency=2) as fake:
        n = 12
        manifest = catalog(fake, clips["silent"], tmp_path / "m.csv", n)
        out = tmp_path / "out"
        run = params(manifest, out, max_in_flight=5, task_run_per_job=False)
        task = asyncio.create_task(remove_backgrounds(run, return_state=True))
        for _ in range(600):
            if len(queued(fake)) >= 3:
                break
            await asyncio.sleep(0.02)
        assert len(queued(fake)) >= 3
        task.cancel()
        state = await task
        assert state.is_cancelled()
        assert queued(fake) == []  # every queued job was cancelled at fal
        assert fake.cancelled >= 3
        first = results(out)
        assert len(first) == n and first["status"].notna().all()
        assert set(first["status"]) <= {"succeeded", "cancelled"}
        assert (first["status"] == "cancelled").sum() >= 3
        assert all(
            isinstance(e, str) and e for e in first.loc[first.status == "cancelled", "error"]
        )
        done_first = set(first.loc[first.status == "succeeded", "video_url"])
        accepted_first = dict(fake.accepted_inputs)

        summary = await remove_backgrounds(run)  # the same command again
        assert summary["counts"]["succeeded"] + summary["counts"]["skipped"] == n
        assert summary["counts"]["skipped"] == len(done_first)
        second = results(out)
        assert set(second["status"]) <= {"succeeded", "skipped"}
        for (app, url), count in fake.accepted_inputs.items():
            assert app == PIXELCUT
            if url in done_first:  # finished jobs are reused, never submitted again
                assert count == accepted_first[(app, url)] == 1


async def test_cancelling_the_flow_run_in_prefect_cancels_its_fal_jobs(
    prefect_server: None, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UI path: the flow run is set to CANCELLING on the server; the run notices and stops."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Cancelling

    from flows.removal import remove_backgrounds

    with account(tmp_path / "fake", monkeypatch, latency_s=1.0, concurrency=1) as fake:
        manifest = catalog(fake, clips["silent"], tmp_path / "m.csv", 10)
        out = tmp_path / "out"
        run = params(manifest, out, max_in_flight=3, task_run_per_job=False)
        name = f"cancel-me-{tmp_path.name}"
        task = asyncio.create_task(
            remove_backgrounds.with_options(flow_run_name=name)(run, return_state=True)
        )
        for _ in range(600):
            if len(queued(fake)) >= 2:
                break
            await asyncio.sleep(0.02)
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
            assert len(runs) == 1
            await client.set_flow_run_state(runs[0].id, Cancelling(), force=True)
        state = await asyncio.wait_for(task, timeout=60)
        assert state.is_cancelled()
        assert queued(fake) == []
        table = results(out)
        assert len(table) == 10 and table["status"].notna().all()
        assert (table["status"] == "cancelled").sum() >= 7


@pytest.mark.parametrize("task_runs", [False, True])
async def test_shared_limit_caps_two_runs_together(
    prefect_server: None,
    fal_account: FakeFal,
    clips: dict[str, Path],
    tmp_path: Path,
    task_runs: bool,
) -> None:
    """Two runs on one account (as two workers would be): the Prefect limit holds across both."""
    from prefect.client.orchestration import get_client

    from flows.concurrency import ensure_shared_limit
    from flows.removal import remove_backgrounds

    await ensure_shared_limit("test-fal-account", 7)  # resized by the runs below
    async with get_client() as client:
        assert (await client.read_global_concurrency_limit_by_name("test-fal-account")).limit == 7
    runs = []
    for tag in ("a", "b"):
        manifest = catalog(fal_account, clips["silent"], tmp_path / f"{tag}.csv", 8, tag=tag)
        shared = dict(max_in_flight=3, shared_limit="test-fal-account", task_run_per_job=task_runs)
        runs.append(params(manifest, tmp_path / tag, **shared))
    summaries = await asyncio.gather(*(remove_backgrounds(r) for r in runs))
    assert [s["counts"]["succeeded"] for s in summaries] == [8, 8]
    # Each run alone allows 3 in flight; together they still never had more than 3 at fal.
    assert fal_account.peak_in_progress <= 3
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name("test-fal-account")
    assert limit.limit == 3 and limit.active_slots == 0  # sized by the runs, every slot returned
