"""``make deploy``: the process work pool, the global concurrency limits and the deployment.

Everything comes from configs/deployment.yaml, so the same command sets up a laptop and a
fleet. Workers run the code of the repository they start in: with ``source: "."`` each worker
machine needs this repository at the same path; with a git URL each run clones it.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from flows.concurrency import ensure_shared_limit
from flows.notify import NotifyConfig, ensure_failure_automation
from flows.params import RunParams
from flows.secrets import BLOCKS_ENV, format_block_map, parse_block_map, save_secret_blocks

DEFAULT_CONFIG = Path("configs/deployment.yaml")
FLOW_NAME = "matteflow"  # the @flow name of flows.removal.remove_backgrounds


def _valid_run(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse at load time the parameters a run would refuse at start."""
    if value:
        RunParams.model_validate(value)
    return value


RunParamsDict = Annotated[dict[str, Any], AfterValidator(_valid_run)]


class ScheduleConfig(BaseModel):
    """A cron schedule with the parameters of the runs it starts; off unless ``active``."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="Cron expression, e.g. '0 2 * * *' for 02:00 every night.")
    timezone: str = "UTC"
    active: bool = False
    parameters: RunParamsDict = Field(default_factory=dict)


class DeployConfig(BaseModel):
    """configs/deployment.yaml: what ``make deploy`` creates on the Prefect server."""

    model_config = ConfigDict(extra="forbid")

    name: str = "catalog"
    work_pool: str = "matteflow"
    source: str = Field(".", description="Repository path every worker has, or a git URL.")
    branch: str | None = None
    entrypoint: str = "flows/removal.py:remove_backgrounds"
    description: str = "Remove the background of every video in a catalog manifest."
    tags: list[str] = Field(default_factory=lambda: ["matteflow"])
    parameters: RunParamsDict = Field(
        default_factory=dict, description="Defaults for the UI form (a full RunParams)."
    )
    schedule: ScheduleConfig | None = None
    secret_blocks: dict[str, str] = Field(default_factory=dict)
    concurrency_limits: dict[str, int] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    notify: NotifyConfig | None = Field(
        None, description="A notification when a run ends with failed rows (flows/notify.py)."
    )

    @field_validator("secret_blocks")
    @classmethod
    def _known_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        parse_block_map(format_block_map(value))  # raises on an unknown variable
        return value

    @property
    def is_git(self) -> bool:
        return self.source.endswith(".git") or self.source.startswith(("git@", "git://"))


def load_config(path: Path, **overrides: Any) -> DeployConfig:
    data = yaml.safe_load(path.read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return DeployConfig.model_validate(data)


def job_env(config: DeployConfig, repo: Path) -> dict[str, str]:
    """The flow-run process's environment: block names for secrets, never values."""
    env = dict(config.env)
    if config.secret_blocks:
        env[BLOCKS_ENV] = format_block_map(config.secret_blocks)
    if not config.is_git:
        # Imports resolve to this checkout even where another matteflow is installed.
        env.setdefault("PYTHONPATH", str(repo))
    return env


async def ensure_work_pool(name: str) -> None:
    """A process work pool with Prefect's default job template; an existing one is kept."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    async with get_client() as client:
        try:
            await client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )
        except ObjectAlreadyExists:
            pool = await client.read_work_pool(name)
            if pool.type != "process":
                raise ValueError(f"work pool {name!r} exists with type {pool.type!r}") from None


async def ensure_concurrency_limits(limits: dict[str, int]) -> None:
    """Global concurrency limits shared by every worker (e.g. one fal account's cap)."""
    for name, slots in limits.items():
        await ensure_shared_limit(name, slots)


async def deploy_flow(config: DeployConfig, repo: Path) -> UUID:
    """Create or update the deployment; returns its id."""
    from prefect import Flow
    from prefect.runner.storage import GitRepository
    from prefect.schedules import Cron

    source: Any = (
        GitRepository(url=config.source, branch=config.branch)
        if config.is_git
        else str((repo / config.source).resolve())
    )
    flow: Flow[..., Any] = await Flow.afrom_source(source=source, entrypoint=config.entrypoint)
    schedules = []
    if config.schedule:
        s = config.schedule
        schedules.append(
            Cron(
                s.cron,
                timezone=s.timezone,
                active=s.active,
                slug="nightly",
                parameters={"params": s.parameters} if s.parameters else None,
            )
        )
    return await flow.adeploy(
        name=config.name,
        work_pool_name=config.work_pool,
        job_variables={"env": job_env(config, repo)},
        schedules=schedules,
        parameters={"params": config.parameters} if config.parameters else None,
        description=config.description,
        tags=config.tags,
        print_next_steps=False,
        ignore_warnings=True,  # "process pools are for local development": ours is deliberate
    )


async def deploy_all(config: DeployConfig, repo: Path) -> UUID:
    """Everything ``make deploy`` does, in order: pool, limits, deployment, notification."""
    await ensure_work_pool(config.work_pool)
    await ensure_concurrency_limits(config.concurrency_limits)
    deployment_id = await deploy_flow(config, repo)
    if config.notify is not None:
        automation = await ensure_failure_automation(config.notify)
        if automation is None:
            print(
                f"notification: no block {config.notify.block!r} and ${config.notify.url_env} "
                "unset: no automation created"
            )
        else:
            print(
                f"notification: automation {config.notify.automation!r} -> block {config.notify.block!r}"
            )
    return deployment_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--schedule", choices=["on", "off"], help="Override schedule.active.")
    parser.add_argument("--work-pool", help="Override work_pool.")
    parser.add_argument(
        "--save-secrets",
        action="store_true",
        help="Store FAL_KEY/AWS_* from this shell in the Secret blocks the config names.",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config, work_pool=args.work_pool)
    if args.schedule and config.schedule:
        config.schedule.active = args.schedule == "on"
    deployment_id = asyncio.run(deploy_all(config, Path.cwd()))
    if args.save_secrets:
        saved = asyncio.run(save_secret_blocks(config.secret_blocks))
        print(f"Secret blocks saved: {', '.join(saved) or 'none (no variable set)'}")
    state = "off"
    if config.schedule:
        state = f"{config.schedule.cron} ({'on' if config.schedule.active else 'off'})"
    print(f"deployment {FLOW_NAME}/{config.name} ({deployment_id}) on pool {config.work_pool}")
    print(f"schedule: {state}; start a worker with: make worker POOL={config.work_pool}")


if __name__ == "__main__":
    main()
