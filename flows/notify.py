"""``make deploy``'s failure notification: a Prefect notification block and an automation.

The automation fires on ``matteflow.run.finished`` events whose run ended with failed rows
(``Completed with failures``) or Failed, and sends their message, report and gallery links
through the block. The block is Prefect's apprise-backed webhook block (block type "Slack
Webhook"): it takes any Apprise URL, a ``https://hooks.slack.com/…`` webhook as well as
``json://host/path`` for a generic JSON webhook, ``msteams://…``, ``discord://…``. The URL is a
secret: it comes from the environment variable the config names, never from the YAML file.
"""

from __future__ import annotations

import os
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from flows.outcome import OUTCOME_LABEL, RUN_FINISHED

BLOCK_TYPE = "slack-webhook"
Outcome = Literal["failures", "failed"]
ALL_OUTCOMES: tuple[Outcome, ...] = ("failures", "failed")
SUBJECT = "matteflow run {{ event.payload.run_name }}: {{ event.payload.outcome }}"
BODY = (
    "{{ event.payload.message }}\n"
    "report: {{ event.payload.report_url }}\n"
    "gallery: {{ event.payload.gallery_url }}"
)


class NotifyConfig(BaseModel):
    """configs/deployment.yaml ``notify:`` section."""

    model_config = ConfigDict(extra="forbid")

    block: str = Field("matteflow-failures", description="Name of the notification block.")
    url_env: str = Field(
        "MATTEFLOW_NOTIFY_URL",
        description="Environment variable holding the Apprise/Slack webhook URL; when set, "
        "`make deploy` saves it into the block (else an existing block is used).",
    )
    automation: str = "matteflow: run with failures"
    outcomes: list[Outcome] = Field(
        default_factory=lambda: list(ALL_OUTCOMES),
        description="failures: 'Completed with failures'; failed: the run ended Failed.",
    )


async def ensure_block(config: NotifyConfig) -> UUID | None:
    """The block's id: saved from ``$url_env`` when set, else an existing one, else None."""
    from prefect import get_client
    from prefect.blocks.notifications import SlackWebhook
    from prefect.exceptions import ObjectNotFound

    url = os.environ.get(config.url_env)
    if url:
        saved: UUID = await SlackWebhook(url=url).asave(config.block, overwrite=True)
        return saved
    async with get_client() as client:
        try:
            found = await client.read_block_document_by_name(
                config.block, BLOCK_TYPE, include_secrets=False
            )
        except ObjectNotFound:
            return None
    return found.id


async def ensure_failure_automation(config: NotifyConfig) -> UUID | None:
    """Create (or replace) the automation; None when no block exists to send through."""
    from prefect import get_client
    from prefect.automations import Automation, EventTrigger, SendNotification

    block_id = await ensure_block(config)
    if block_id is None:
        return None
    async with get_client() as client:
        for old in await client.read_automations_by_name(config.automation):
            await client.delete_automation(old.id)
    automation = Automation(
        name=config.automation,
        description="Tell someone when a matteflow run ends with failed rows.",
        trigger=EventTrigger(
            expect={RUN_FINISHED},
            match={OUTCOME_LABEL: list(config.outcomes)},
            posture="Reactive",
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    created = await automation.acreate()
    return created.id
