"""Deployment end to end: Prefect server on PostgreSQL, two process workers, a UI-style run.

The run is triggered the way the UI's "Run" button does it (a flow run created from the
deployment with parameters); its shards must spread over both workers and merge into one report.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from flows.deploy import FLOW_NAME, DeployConfig, job_env, load_config
from flows.secrets import BLOCKS_ENV
from tests.fakes.fal_server import FakeFal
from tests.fakes.prefect_stack import (
    PrefectStack,
    postgres_available,
    postgres_database,
    wait_final,
)
from tests.fakes.seaweed import SeaweedS3

REPO = Path(__file__).resolve().parents[2]
POOL = "it-pool"
WORKERS = {"it-worker-a", "it-worker-b"}
S3_SECRET = "matteflow-test-secret"  # the SeaweedFS test secret, served from a Secret block
FAL_KEY = "it-fal-key-0123456789"  # the fake fal accepts only this key; it too comes from a block
# The fal account's concurrency, held across workers by a global limit. At 1, shards that run
# at the same time on two workers would put 2 or 3 jobs in progress at fal without the limit.
ACCOUNT_CAP = 1


def test_repo_config_is_valid_and_schedule_off_by_default() -> None:
    config = load_config(REPO / "configs/deployment.yaml")
    assert config.schedule is not None and config.schedule.active is False
    assert config.schedule.parameters["manifest"]
    env = job_env(config, REPO)
    assert env[BLOCKS_ENV] == "FAL_KEY=matteflow-fal-key"
    assert env["PYTHONPATH"] == str(REPO)
    with pytest.raises(ValueError, match="VAR=block"):
        DeployConfig(secret_blocks={"PATH": "x"})
    with pytest.raises(ValueError, match="shard_size"):
        DeployConfig(parameters={"manifest": "m.csv", "shard_size": -1})


def test_parameter_form_schema_is_typed() -> None:
    """The UI renders the deployment's parameter schema: enums, descriptions and bounds."""
    from prefect.utilities.callables import parameter_schema

    from flows.removal import remove_backgrounds

    schema = parameter_schema(remove_backgrounds).model_dump_for_openapi()
    params = schema["definitions"]["RunParams"]["properties"]
    assert params["endpoint"]["$ref"] == "#/definitions/EndpointName"
    assert schema["definitions"]["EndpointName"]["enum"] == ["local", "pixelcut", "birefnet"]
    assert (
        params["manifest"]["description"]
        and "manifest" in schema["definitions"]["RunParams"]["required"]
    )
    shard = next(a for a in params["shard_size"]["anyOf"] if a.get("type") == "integer")
    assert shard["minimum"] == 0 and "shard" in params["shard_size"]["description"].lower()
    assert not {"fal_key", "aws_secret_access_key"} & set(params)


@pytest.mark.usefixtures("prefect_server")
async def test_deploy_creates_pool_limit_and_deployment_with_schedule_off() -> None:
    """``make deploy``'s steps on the session's server (runs where PostgreSQL is missing too)."""
    from prefect import get_client

    from flows.deploy import deploy_all

    config = DeployConfig(
        name="t-catalog",
        work_pool="t-pool",
        concurrency_limits={"t-fal-account": 3},
        secret_blocks={"FAL_KEY": "t-fal"},
        schedule={"cron": "0 2 * * *", "parameters": {"manifest": "s3://b/m.csv"}},
    )
    deployment_id = await deploy_all(config, REPO)
    async with get_client() as client:
        deployment = await client.read_deployment(deployment_id)
        pool = await client.read_work_pool("t-pool")
        limit = await client.read_global_concurrency_limit_by_name("t-fal-account")
    assert pool.type == "process" and limit.limit == 3
    assert deployment.name == "t-catalog" and deployment.work_pool_name == "t-pool"
    assert deployment.entrypoint == "flows/removal.py:remove_backgrounds"
    [schedule] = deployment.schedules
    assert schedule.active is False
    assert schedule.parameters == {"params": {"manifest": "s3://b/m.csv"}}
    env = deployment.job_variables["env"]
    assert env == {BLOCKS_ENV: "FAL_KEY=t-fal", "PYTHONPATH": str(REPO)}
    assert "RunParams" in json.dumps(deployment.parameter_openapi_schema)
    # Deploying again updates the same deployment (make deploy is idempotent).
    assert await deploy_all(config, REPO) == deployment_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    if not postgres_available():
        pytest.skip("needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres)")
    with (
        postgres_database() as url,
        PrefectStack(tmp_path_factory.mktemp("prefect-stack"), REPO, database_url=url) as running,
    ):
        try:
            running.start_server()
            yield running
        finally:
            running.stop()  # before the database is dropped


def write_manifest(path: Path, video: str) -> list[dict[str, str]]:
    """Six distinct jobs, a duplicate and an invalid row."""
    colours = ["black", "white", "green", "blue", "magenta"]
    rows = [
        {"id": f"v-{c}", "video_url": video, "background": c, "output_format": ""} for c in colours
    ]
    rows.insert(
        2,
        {"id": "broken", "video_url": "ftp://nowhere/x.mp4", "background": "", "output_format": ""},
    )
    rows.append(
        {
            "id": "v-alpha",
            "video_url": video,
            "background": "transparent",
            "output_format": "webm_vp9",
        }
    )
    rows.append(
        {"id": "v-black-again", "video_url": video, "background": "black", "output_format": ""}
    )
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "video_url", "background", "output_format"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture
def fake_fal_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeFal]:
    """A fake fal with room for more jobs than the account cap: only our limit holds it."""
    with FakeFal(
        tmp_path_factory.mktemp("fakefal"),
        latency_s=3.0,
        concurrency=4,
        key=FAL_KEY,
    ) as fake:
        yield fake


@pytest.mark.slow
@pytest.mark.integration
def test_ui_run_shards_over_two_workers(
    stack: PrefectStack,
    seaweed: SeaweedS3,
    s3_bucket: str,
    clips: dict[str, Path],
    fake_fal_shared: FakeFal,
    tmp_path: Path,
) -> None:
    from prefect import get_client
    from prefect.blocks.system import Secret
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    fake = fake_fal_shared
    rows = write_manifest(tmp_path / "catalog.csv", fake.serve_file(clips["person"]))
    # The catalog lives where every worker machine can read it, as in a real scale-out.
    import s3fs

    fs = s3fs.S3FileSystem(**seaweed.storage_options())
    fs.put_file(str(tmp_path / "catalog.csv"), f"{s3_bucket}/manifests/catalog.csv")
    config = {
        "name": "it-catalog",
        "work_pool": POOL,
        "source": ".",
        "secret_blocks": {"FAL_KEY": "it-fal-key", "AWS_SECRET_ACCESS_KEY": "it-s3-secret"},
        "concurrency_limits": {"it-fal-account": ACCOUNT_CAP},
        "schedule": {"cron": "0 2 * * *", "active": False},
    }
    config_path = tmp_path / "deployment.yaml"
    config_path.write_text(yaml.safe_dump(config))

    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        Secret(value=FAL_KEY).save("it-fal-key", overwrite=True)
        Secret(value=S3_SECRET).save("it-s3-secret", overwrite=True)
        # `make deploy`: pool, limits, deployment, as a separate process like the Make target.
        subprocess.run(
            [sys.executable, "-m", "flows.deploy", "--config", str(config_path)],
            cwd=REPO,
            env=stack.env(),
            check=True,
            timeout=180,
        )
        # Workers know where fal and S3 are, but neither secret: those come from Secret blocks.
        worker_env = {
            "AWS_ACCESS_KEY_ID": "matteflow-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FAL_QUEUE_URL": fake.queue_url,
            "FAL_REST_URL": fake.rest_url,
        }
        for name in sorted(WORKERS):
            stack.start_worker(name, POOL, limit=2, **worker_env)
        stack.wait_for_workers(POOL, WORKERS)

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"{FLOW_NAME}/it-catalog")
            assert deployment.schedules and not deployment.schedules[0].active
            limit = client.read_global_concurrency_limit_by_name("it-fal-account")
            assert limit.limit == ACCOUNT_CAP
            parameters = {
                "params": {
                    "manifest": f"{s3_bucket}/manifests/catalog.csv",
                    "endpoint": "pixelcut",
                    "output": s3_bucket,
                    "s3_endpoint_url": seaweed.endpoint_url,
                    "run_name": "nightly",
                    "shard_size": 2,
                    "max_in_flight": ACCOUNT_CAP,
                    "shared_limit": "it-fal-account",
                }
            }
            # What the UI's "Run" button does: POST /deployments/{id}/create_flow_run.
            parent = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
            try:
                parent = wait_final(client, parent.id, timeout=420)
            finally:
                print(stack.tail("it-worker-a"), stack.tail("it-worker-b"), sep="\n")
            assert parent.state is not None and parent.state.is_completed(), parent.state
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
                )
            )
            run_ids = [c.id for c in [parent, *children]]
            logs: list[Any] = []
            while page := client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)),
                limit=200,
                offset=len(logs),
            ):
                logs.extend(page)

    # Three shards of two jobs each, spread over both workers.
    assert len(children) == 3
    assert all(c.state is not None and c.state.is_completed() for c in children)
    assert all(c.deployment_id == deployment.id for c in children)
    assert {c.labels.get("prefect.worker.name") for c in children} == WORKERS

    # The account cap held across workers while shards ran side by side on both of them;
    # each distinct job was submitted exactly once.
    stats = fake.stats()
    print("fake fal:", stats)
    assert stats["peak_in_progress"] == ACCOUNT_CAP
    assert stats["accepted_total"] == 6

    base = f"{s3_bucket}/runs/nightly"
    summary = json.loads(fs.cat(f"{base}/summary.json"))
    assert [s["state"] for s in summary["shards"]] == ["Completed"] * 3
    assert {s["worker"] for s in summary["shards"]} == WORKERS
    assert {s["flow_run_id"] for s in summary["shards"]} == {str(c.id) for c in children}
    assert fs.exists(f"{base}/shards/001.jsonl") and fs.exists(f"{base}/shards/003/results.csv")

    with fs.open(f"{base}/results.csv") as fh:
        results = pd.read_csv(fh)
    assert list(results["row"]) == list(range(1, len(rows) + 1))
    assert list(results["id"]) == [r["id"] for r in rows]
    expected = ["invalid" if r["id"] == "broken" else "succeeded" for r in rows]
    assert list(results["status"]) == expected
    assert results.set_index("id").loc["v-black-again", "duplicate_of"] == 1
    assert summary["counts"]["succeeded"] == 7 and summary["rows"] == 8
    # One cost total: the rows' costs, which are the shards' costs (the duplicate costs nothing).
    assert summary["totals"]["cost_usd"] > 0
    assert summary["totals"]["cost_usd"] == pytest.approx(results["cost_usd"].sum())
    assert summary["totals"]["cost_usd"] == pytest.approx(
        sum(s["cost_usd"] for s in summary["shards"])
    )
    for url in results.loc[results["status"] == "succeeded", "output_url"]:
        assert fs.exists(url)

    # The secrets came from their blocks and show up nowhere: parameters, reports, logs.
    messages = "\n".join(log.message for log in logs)
    assert "FAL_KEY" in messages and "AWS_SECRET_ACCESS_KEY" in messages
    shown = json.dumps([c.parameters for c in [parent, *children]]) + messages
    shown += fs.cat(f"{base}/summary.json").decode() + results.to_csv()
    for secret in (S3_SECRET, FAL_KEY):
        assert secret not in shown
    assert os.environ.get("FAL_KEY") != FAL_KEY
