"""What the ledger keeps of a fal job: the handles that let a later run resume instead of pay.

The submission is the resume handle (never submit twice, FACTS.md); the result holds the output
files fal made. They live here, not in ``tasks/fal``, so the ledger does not import the client.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Submission(BaseModel):
    """fal's answer to a submit: the request id and the URLs to poll, fetch and cancel it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None
    submitted_at: str | None = None  # when this run recorded it; None in entries before it


class FalFile(BaseModel):
    """``video``/``mask_video`` of a fal result; the extra fields come from birefnet."""

    model_config = ConfigDict(extra="allow")

    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    num_frames: int | None = None

    def metadata(self) -> dict[str, Any]:
        """What goes into the ledger: everything but inline data (sync_mode data URIs)."""
        data = self.model_dump(mode="json", exclude_none=True)
        if str(data.get("url", "")).startswith("data:"):
            data["url"] = "data:…"
        return data

    def stored(self) -> FalFile:
        """This file as the ledger keeps it (no inline data)."""
        return FalFile.model_validate(self.metadata())


class FalResult(BaseModel):
    """The output files of a finished fal job: where they are, their names and sizes."""

    video: FalFile | None = None
    mask_video: FalFile | None = None


class FalHandles(BaseModel):
    """A fal job's handles in its ledger entry."""

    app: str | None = None
    submission: Submission | None = None
    cancelled_submission: Submission | None = None  # fal confirmed the cancel: submit again
    cancel: str | None = None  # fal's answer to our cancel (CANCELLATION_REQUESTED, …)
    metrics: dict[str, Any] = Field(default_factory=dict)  # fal's own (inference_time)
    completed_at: str | None = None  # when this run first saw fal's COMPLETED
    result: FalResult | None = None  # saved the moment fal said COMPLETED, before any download

    @classmethod
    def from_legacy(cls, old: dict[str, Any]) -> FalHandles:
        """Handles from an entry written before they were typed (``metrics["fal"]``)."""
        outputs = old.get("outputs") or None
        return cls(
            app=old.get("app"),
            submission=old.get("submission"),
            cancelled_submission=old.get("cancelled_submission"),
            cancel=old.get("cancel"),
            metrics=old.get("metrics") or {},
            result=FalResult.model_validate(outputs) if outputs else None,
        )
