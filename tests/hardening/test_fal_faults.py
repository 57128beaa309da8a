"""The fal side misbehaves (fake fal queue server on loopback, outputs on a loopback "CDN"):
bursts of 429 and 503, connections dropped mid-response, a job that never completes, an output
URL that 404s. Every row ends with a status and a reason; nothing is submitted twice."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tasks.endpoints import endpoint_info
from tasks.fal.client import FalSettings, PollPolicy, build_client
from tasks.fal.job import FalRunner, run_fal_job
from tasks.ledger.jobs import Job, JobState, Ledger, job_key
from tasks.manifest.plan import resolve_params
from tasks.media.verify import probe
from tasks.retry import Backoff
from tasks.run.cost import price_for
from tasks.storage.store import Storage
from tests.fakes.fal_server import PIXELCUT, FakeFal, Faults
from tests.fakes.http_files import HttpFiles

STATUSES = {"succeeded", "failed", "failed_verification", "skipped", "skipped_budget"}


class CdnFal(FakeFal):
    """The fake fal, publishing its output videos on a separate loopback "CDN" server."""

    def __init__(self, workdir: Path, cdn: HttpFiles, **kw: Any) -> None:
        super().__init__(workdir, **kw)
        self.cdn, self.route, self.missing = cdn, dict[str, Any](), False

    def _publish(self, path: Path, name: str) -> str:
        if not name.endswith(".webm"):  # inputs the test serves stay on the fake itself
            return super()._publish(path, name)
        url = self.cdn.serve(path, name, **self.route)
        if self.missing:
            del self.cdn.routes[name]  # fal says where the output is; the CDN has lost it
        return url


class Bursts(Faults):
    """Calls fail in bursts: 4 in every 10, a burst of 429s then a burst of 503s, and so on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.n, self.lock = 0, threading.Lock()

    def pick(self, call: str) -> str | None:
        if call not in self.calls:
            return None
        with self.lock:
            self.n += 1
            n = self.n
        if n % 10 >= 4:
            return None
        return "429" if (n // 10) % 2 == 0 else "503"


def runner_for(fake: FakeFal, *, job_timeout_s: float = 60.0, attempts: int = 10) -> FalRunner:
    settings = FalSettings.model_validate(
        {
            "key": SecretStr(fake.key),
            "queue_url": fake.base_url,
            "rest_url": fake.base_url,
            "job_timeout_s": job_timeout_s,
        }
    )
    client = build_client(
        settings,
        retry=Backoff(attempts=attempts, base_delay_s=0.01, max_delay_s=0.05),
        poll=PollPolicy(initial_s=0.02, max_s=0.1, timeout_s=job_timeout_s),
    )
    return FalRunner(client, endpoint_info("pixelcut"), price_for("pixelcut"))


def job_for(url: str, n: int) -> Job:
    params = resolve_params(endpoint_info("pixelcut"), {}, {})
    return Job(
        key=job_key(url, "pixelcut", params),
        row=n,
        id=f"r{n}",
        video_url=url,
        endpoint="pixelcut",
        params=params,
    )


async def run_all(jobs: list[Job], storage: Storage, runner: FalRunner) -> list[dict[str, Any]]:
    try:
        return list(await asyncio.gather(*(run_fal_job(j, storage, runner) for j in jobs)))
    finally:
        await runner.aclose()


def assert_terminal_with_reasons(rows: list[dict[str, Any]], tally: Counter[str]) -> None:
    tally["rows"] += len(rows)
    for row in rows:
        assert row["status"] in STATUSES, row
        if row["status"] != "succeeded":
            assert row["error_code"] and row["error"], row
    tally["rows_lost"] += 0  # every row came back with a status (asserted above)


def assert_outputs_verify(rows: list[dict[str, Any]], storage: Storage) -> None:
    for row in rows:
        if row["status"] == "succeeded":
            found = probe(Path(row["output_url"]))
            assert found.has_alpha and found.frames == row["frames"] == 8
            assert Path(row["output_url"]).stat().st_size == row["bytes"]
            entry = Ledger(storage).get(row["job_key"])
            assert entry is not None and entry.state is JobState.succeeded


@pytest.fixture
def cdn() -> Any:
    server = HttpFiles().start()
    yield server
    server.stop()


async def test_bursts_of_429_and_503_and_an_ambiguous_submit(
    tmp_path: Path, clips: dict[str, Path], cdn: HttpFiles, tally: Counter[str]
) -> None:
    with CdnFal(tmp_path / "fal", cdn, concurrency=4) as fake:
        # The status stream is faulted too: a refused stream falls back to (faulted) polls.
        fake.faults = Bursts(calls=("submit", "stream", "status", "result"))
        fake.drop_after_accept = 1  # one submit is queued at fal, but its answer never arrives
        urls = [fake.serve_file(clips["silent"], f"b{i}.mp4") for i in range(6)]
        storage = Storage(str(tmp_path / "out"))
        rows = await run_all(
            [job_for(u, n) for n, u in enumerate(urls, 1)], storage, runner_for(fake)
        )
        tally["fal_faults"] += sum(fake.injected.values()) + 1
    assert_terminal_with_reasons(rows, tally)
    assert fake.injected["429"] >= 4 and fake.injected["503"] >= 4
    unknown = [r for r in rows if r["error_code"] == "submit_unknown"]
    assert len(unknown) == 1 and "may have queued" in unknown[0]["error"]
    assert [r["status"] for r in rows].count("succeeded") == 5
    # No second job for any input; the ambiguous one is at fal once, and recorded as such.
    assert all(n == 1 for n in fake.accepted_inputs.values()) and len(fake.accepted_inputs) == 6
    entry = Ledger(storage).get(unknown[0]["job_key"])
    assert entry is not None and entry.state is JobState.submitting
    assert_outputs_verify(rows, storage)


async def test_connections_dropped_mid_response(
    tmp_path: Path, clips: dict[str, Path], cdn: HttpFiles, tally: Counter[str]
) -> None:
    """Status/result answers dropped; output downloads cut off half-way, then whole."""
    with CdnFal(tmp_path / "fal", cdn, concurrency=4) as fake:
        fake.faults = Faults(rate=0.3, kinds=("drop",), calls=("status", "result"), seed=3)
        fake.route = {"truncate_first": 2}
        urls = [fake.serve_file(clips["silent"], f"d{i}.mp4") for i in range(4)]
        storage = Storage(str(tmp_path / "out"))
        rows = await run_all(
            [job_for(u, n) for n, u in enumerate(urls, 1)], storage, runner_for(fake)
        )
        cut = sum(n for (kind, _), n in cdn.requests.items() if kind == "TRUNCATED")
        tally["fal_faults"] += fake.injected["drop"] + cut
    assert_terminal_with_reasons(rows, tally)
    assert fake.injected["drop"] >= 1 and cut >= 4
    assert [r["status"] for r in rows] == ["succeeded"] * 4
    assert all(n == 1 for n in fake.accepted_inputs.values())
    assert_outputs_verify(rows, storage)


async def test_a_download_that_is_always_cut_short_fails_clearly(
    tmp_path: Path, clips: dict[str, Path], cdn: HttpFiles, tally: Counter[str]
) -> None:
    with CdnFal(tmp_path / "fal", cdn) as fake:
        fake.route = {"truncate_first": -1}
        storage = Storage(str(tmp_path / "out"))
        rows = await run_all(
            [job_for(fake.serve_file(clips["silent"], "t.mp4"), 1)],
            storage,
            runner_for(fake, attempts=3),
        )
        tally["fal_faults"] += 3
    assert_terminal_with_reasons(rows, tally)
    (row,) = rows
    assert (row["status"], row["error_code"]) == ("failed", "endpoint_transient"), row
    assert "download" in row["error"] and "after 3 attempts" in row["error"]
    assert not (tmp_path / "out" / "videos").exists() or not any(
        (tmp_path / "out/videos").iterdir()
    )
    entry = Ledger(storage).get(row["job_key"])
    assert entry is not None and entry.state is JobState.failed and entry.request_id


async def test_a_job_that_never_completes_is_cancelled_at_its_deadline(
    tmp_path: Path, clips: dict[str, Path], cdn: HttpFiles, tally: Counter[str]
) -> None:
    with CdnFal(tmp_path / "fal", cdn, latency_s=3.0, concurrency=1) as fake:
        storage = Storage(str(tmp_path / "out"))
        jobs = [job_for(fake.serve_file(clips["silent"], f"s{i}.mp4"), i) for i in (1, 2)]
        rows = await run_all(jobs, storage, runner_for(fake, job_timeout_s=0.4))
        tally["fal_faults"] += 2
    assert_terminal_with_reasons(rows, tally)
    assert {(r["status"], r["error_code"]) for r in rows} == {("failed", "fal_timeout")}
    assert fake.cancelled == 2 and sum(fake.accepted.values()) == 2


async def test_an_output_url_that_404s_fails_the_row_and_is_not_resubmitted(
    tmp_path: Path, clips: dict[str, Path], cdn: HttpFiles, tally: Counter[str]
) -> None:
    with CdnFal(tmp_path / "fal", cdn) as fake:
        fake.missing = True
        storage = Storage(str(tmp_path / "out"))
        job = job_for(fake.serve_file(clips["silent"], "gone.mp4"), 1)
        rows = await run_all([job], storage, runner_for(fake))
        again = await run_all([job], storage, runner_for(fake))
        tally["fal_faults"] += 2
    assert_terminal_with_reasons(rows + again, tally)
    for row in rows + again:
        assert (row["status"], row["error_code"]) == ("failed", "fal_download_failed")
        assert "404" in row["error"]
    assert fake.accepted[PIXELCUT] == 1  # the re-run asked fal for the result again, not a job
    assert again[0]["request_id"] == rows[0]["request_id"]


async def test_bad_inputs_are_refused_before_anything_is_paid(
    tmp_path: Path, clips: dict[str, Path], cdn: HttpFiles, tally: Counter[str]
) -> None:
    """Missing, forbidden, HTML and oversized inputs never reach fal; a presigned-style link
    whose HEAD is refused still goes through."""
    with CdnFal(tmp_path / "fal", cdn) as fake:
        body = clips["silent"].read_bytes()
        inputs = {
            "404": (cdn.serve(b"", "gone.mp4", status=404), "input_not_found"),
            "403": (cdn.serve(b"", "private.mp4", status=403), "input_forbidden"),
            "html": (
                cdn.serve(b"<html>login</html>", "page.mp4", content_type="text/html"),
                "input_html",
            ),
            "big": (cdn.serve(body * 4, "big.mp4"), "input_too_large"),
            "signed": (cdn.serve(body, "signed.mp4", head_status=403), None),
        }
        runner = runner_for(fake)
        runner.input_limits = runner.input_limits.model_copy(update={"max_bytes": len(body) * 2})
        storage = Storage(str(tmp_path / "out"))
        jobs = [job_for(url, n) for n, (url, _) in enumerate(inputs.values(), 1)]
        rows = await run_all(jobs, storage, runner)
        tally["inputs_tried"] += len(inputs)
    assert_terminal_with_reasons(rows, tally)
    for row, (url, code) in zip(rows, inputs.values(), strict=True):
        assert row["error_code"] == code, row
        assert fake.accepted_inputs[(PIXELCUT, url)] == (1 if code is None else 0)
    assert sum(fake.accepted.values()) == 1
