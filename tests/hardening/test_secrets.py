"""With canary values as FAL_KEY and the S3 secret, representative runs (local engine, S3
output, fal with faults and failures, a revoked key, a storage error) leave the canaries nowhere:
not in output files, results, ledger, logs (captured and on the Prefect server), artifacts, flow
run parameters or exception text. The whole session is also scanned (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import pytest
import s3fs
from typer.testing import CliRunner

from flows.cli import app
from flows.params import RunParams
from flows.removal import remove_backgrounds
from tasks.errors import AuthError, StorageError
from tasks.storage.store import Storage
from tests.fakes.fal_server import FakeFal, Faults
from tests.fakes.runs import pixelcut_params
from tests.fakes.seaweed import SeaweedS3
from tests.hardening.canary import (
    CANARIES,
    CANARY_FAL_KEY,
    CANARY_S3_SECRET,
    leaks_in_files,
    leaks_in_text,
    leaks_in_values,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


@contextmanager
def verbose_prefect_logs() -> Iterator[None]:
    """Send INFO and DEBUG run logs to the server too, so there is more to scan."""
    names = ("prefect.flow_runs", "prefect.task_runs")
    before = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


async def run_flow(params: RunParams) -> tuple[UUID, Any]:
    """Run the flow; return its flow run id and its result or the exception it raised."""
    state = await remove_backgrounds(params, return_state=True)  # type: ignore[call-overload]
    run_id = state.state_details.flow_run_id
    try:
        return run_id, await state.result()
    except Exception as exc:
        return run_id, exc


async def server_side(run_ids: list[UUID]) -> tuple[list[str], int]:
    """Leaks in what the Prefect server keeps of these runs: logs, artifacts, parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    leaks: list[str] = []
    seen = 0
    async with get_client() as client:
        logs: list[Any] = []
        while True:
            page = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)),
                limit=200,
                offset=len(logs),
            )
            logs += page
            if len(page) < 200:
                break
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        )
        for log in logs:
            leaks += leaks_in_text(log.message, f"server log {log.name}")
        for art in arts:
            leaks += leaks_in_text(f"{art.data} {art.description}", f"artifact {art.key}")
        for run_id in run_ids:
            run = await client.read_flow_run(run_id)
            leaks += leaks_in_text(repr(run.parameters), f"flow run {run.name} parameters")
        seen = len(logs) + len(arts)
    return leaks, seen


def test_no_secret_reaches_any_output(
    clips: dict[str, Path],
    tmp_path: Path,
    seaweed: SeaweedS3,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tally: Counter[str],
) -> None:
    assert os.environ["FAL_KEY"] == CANARY_FAL_KEY  # the session's canaries are in force
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == CANARY_S3_SECRET
    caplog.set_level(logging.DEBUG)
    leaks: list[str] = []
    run_ids: list[UUID] = []
    errors: list[BaseException] = []
    local_manifest = tmp_path / "m.csv"
    with verbose_prefect_logs(), FakeFal(tmp_path / "fal", key=CANARY_FAL_KEY) as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        ok = fake.serve_file(clips["silent"], "ok.mp4")
        rows = [
            {"id": "ok", "video_url": ok},
            {"id": "fails", "video_url": fake.serve_file(clips["silent"], "fails.mp4")},
            {"id": "rejected", "video_url": fake.serve_file(clips["silent"], "rejected.mp4")},
            {"id": "missing", "video_url": f"{fake.base_url}/files/none/gone.mp4"},
            {"id": "local", "video_url": str(clips["silent"])},
            {"id": "bad", "video_url": "ftp://x/y.mp4"},
        ]
        pd.DataFrame(rows).to_csv(local_manifest, index=False)
        fake.fail_inputs.add("fails.mp4")
        fake.reject_inputs.add("rejected.mp4")
        fake.faults = Faults(rate=0.3, kinds=("429", "503"), calls=("status", "result"), seed=5)

        # 1. fal, with transient faults, a failing job, a rejected input, a missing input.
        run_id, summary = asyncio.run(
            run_flow(
                pixelcut_params(
                    local_manifest, tmp_path / "fal-out", "fal", allow_local_inputs=True
                )
            )
        )
        run_ids.append(run_id)
        assert isinstance(summary, dict) and summary["counts"]["succeeded"] >= 2, summary
        tally["fal_faults"] += sum(fake.injected.values())

        # 2. fal with a revoked key: the run stops with an AuthError.
        fake.locked = "User is locked. Reason: Exhausted balance."
        run_id, raised = asyncio.run(
            run_flow(pixelcut_params(local_manifest, tmp_path / "fal-out", "revoked"))
        )
        run_ids.append(run_id)
        assert isinstance(raised, AuthError)
        errors.append(raised)
        fake.locked = None

        # 3. The same through the CLI, in process: what a terminal user sees.
        fake.locked = "User is locked. Reason: Exhausted balance."
        result = CliRunner().invoke(
            app,
            [
                "run",
                str(local_manifest),
                "--endpoint",
                "pixelcut",
                "--output",
                str(tmp_path / "cli-out"),
            ],
        )
        fake.locked = None
        assert result.exit_code == 2
        leaks += leaks_in_text(result.output, "CLI output")

    # 4. The local engine writing to S3, signed with the canary secret from the environment.
    fs = s3fs.S3FileSystem(**seaweed.storage_options())
    fs.put_file(str(clips["silent"]), f"{s3_bucket}/in/a.mp4")
    fs.pipe_file(
        f"{s3_bucket}/in/m.csv",
        f"id,video_url\ns3,{s3_bucket}/in/a.mp4\nnope,{s3_bucket}/in/missing.mp4\n".encode(),
    )
    run_id, summary = asyncio.run(
        run_flow(
            RunParams(
                manifest=f"{s3_bucket}/in/m.csv",
                output=f"{s3_bucket}/out",
                run_name="s3",
                s3_endpoint_url=seaweed.endpoint_url,
            )
        )
    )
    run_ids.append(run_id)
    assert isinstance(summary, dict) and summary["counts"]["succeeded"] == 1, summary

    # 5. A storage error on S3 (a bucket that does not exist), with the canary secret in use.
    try:
        Storage(
            "s3://no-such-bucket-here/out",
            {"client_kwargs": {"endpoint_url": seaweed.endpoint_url}},
        ).write_bytes("x", b"1")
    except StorageError as exc:
        errors.append(exc)
    assert errors[-1:] and isinstance(errors[-1], StorageError)

    # Scan everything.
    scanned, found = leaks_in_files(tmp_path)
    leaks += found
    for key in fs.find(s3_bucket):
        scanned += 1
        leaks += leaks_in_text(fs.cat_file(key).decode("utf-8", "replace"), f"s3://{key}")
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:
            leaks += leaks_in_text(f"{chain!s} {chain!r}", f"exception {type(chain).__name__}")
            chain = chain.__cause__ or chain.__context__
    for record in caplog.records:
        leaks += leaks_in_text(f"{record.getMessage()} {record.exc_text or ''}", "captured log")
    leaks += leaks_in_values([r.args for r in caplog.records], "captured log args")
    server_leaks, server_items = asyncio.run(server_side(run_ids))
    leaks += server_leaks
    tally["secret_scans"] += scanned + len(caplog.records) + server_items + len(errors)
    assert scanned > 20 and server_items > 5  # the scan saw real outputs
    assert not leaks, leaks
    assert all(c not in str(summary) for c in CANARIES)


def test_the_scanners_find_a_planted_canary(tmp_path: Path) -> None:
    """The scan above can fail: a canary split across read chunks, in text, in values."""
    blob = b"\0" * ((1 << 20) - 5) + CANARY_FAL_KEY.encode() + b"\0" * 10
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "video.webm").write_bytes(blob)
    (tmp_path / "clean.txt").write_text("nothing here")
    try:
        scanned, found = leaks_in_files(tmp_path)
    finally:
        (tmp_path / "deep" / "video.webm").unlink()  # the session-wide scan must not see it
    assert scanned == 2 and len(found) == 1 and "video.webm" in found[0]
    assert leaks_in_text(f"Authorization: Key {CANARY_FAL_KEY}", "header")
    assert leaks_in_values([("secret", CANARY_S3_SECRET)], "args")
    assert not leaks_in_text("Key ***", "header")
