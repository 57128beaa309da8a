"""Jobs, job keys and the ledger that records each job's state in storage.

A job key is a stable hash of the input, the endpoint and its parameters, so the same video with
the same options maps to the same ledger entry ``{output}/jobs/{key}.json`` on every run.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from tasks.errors import ErrorCode, MatteflowError
from tasks.ledger.handles import FalHandles
from tasks.storage.store import Storage


class Status(StrEnum):
    """Terminal statuses in the results table (DESIGN.md)."""

    succeeded = "succeeded"
    skipped = "skipped"
    invalid = "invalid"
    failed = "failed"
    failed_verification = "failed_verification"
    skipped_budget = "skipped_budget"
    cancelled = "cancelled"


class JobState(StrEnum):
    """States a ledger entry moves through; the last four are terminal.

    ``completed``: fal finished the job and its result (output URLs) is saved in the entry, but
    the outputs are not home yet: a later run downloads them from there, never submits again."""

    pending = "pending"
    submitting = "submitting"  # a submit was sent and its outcome is not known yet
    submitted = "submitted"  # the endpoint accepted it: request_id is recorded
    running = "running"
    completed = "completed"
    succeeded = "succeeded"
    failed = "failed"
    failed_verification = "failed_verification"
    cancelled = "cancelled"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def job_key(video_url: str, endpoint: str, params: dict[str, Any]) -> str:
    """A stable hash of what determines the output: input, endpoint and its parameters."""
    canonical = json.dumps(
        {"video_url": video_url, "endpoint": endpoint, "params": params},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(row_id: str, key: str) -> str:
    """A storage-safe file stem: a sanitised, bounded id plus the job key (never a path)."""
    cleaned = _SAFE.sub("_", row_id).strip("._-")[:60]
    return f"{cleaned}-{key[:12]}" if cleaned else key[:12]


class Job(BaseModel):
    """One unit of paid or local work: a video with fully resolved endpoint options."""

    key: str
    row: int
    id: str
    video_url: str
    endpoint: str
    params: dict[str, Any]
    estimated_cost_usd: float = 0.0


class LedgerEntry(BaseModel):
    """What storage remembers of a job across runs."""

    key: str
    state: JobState = JobState.pending
    endpoint: str
    video_url: str
    params: dict[str, Any]
    attempts: int = 0
    request_id: str | None = None
    output_path: str | None = None  # relative to the output root
    mask_path: str | None = None
    output_url: str | None = None
    mask_url: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    fal: FalHandles | None = None  # a fal job's submission (its resume handle) and result
    verification: dict[str, Any] = Field(default_factory=dict)
    estimated_cost_usd: float = 0.0
    cost_usd: float = 0.0
    error_code: ErrorCode | None = None
    error: str | None = None
    created_at: str = Field(default_factory=now_iso)
    updated_at: str = Field(default_factory=now_iso)
    history: list[dict[str, Any]] = Field(default_factory=list)

    def note_error(self, exc: MatteflowError, state: JobState | None = None) -> None:
        """Keep the error's code and message for the results row (and ``state`` when given)."""
        if state is not None:
            self.state = state
        self.error_code, self.error = exc.code, exc.message

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Entries written before the fal handles were typed keep them in ``metrics["fal"]``."""
        if not isinstance(data, dict):
            return data
        metrics = data.get("metrics")
        if isinstance(metrics, dict) and isinstance(metrics.get("fal"), dict):
            metrics = dict(metrics)
            old = metrics.pop("fal")
            data = {**data, "metrics": metrics}
            data.setdefault("fal", FalHandles.from_legacy(old))
        return data

    @field_validator("error_code", mode="before")
    @classmethod
    def _one_code(cls, value: Any) -> Any:
        """Older entries may hold a comma-joined list (the first is the main reason) or a code
        no longer in the registry (kept as ``error``; the text still says what happened)."""
        if isinstance(value, str) and not isinstance(value, ErrorCode):
            first = value.split(",")[0].strip()
            if not first:
                return None
            return first if first in ErrorCode.__members__ else ErrorCode.error
        return value


class Ledger:
    """Per-job JSON records under ``jobs/`` in the output storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def rel(key: str) -> str:
        return f"jobs/{key}.json"

    def get(self, key: str) -> LedgerEntry | None:
        data = self.storage.read_json(self.rel(key))
        return None if data is None else LedgerEntry.model_validate(data)

    def put(self, entry: LedgerEntry, *, event: str | None = None) -> LedgerEntry:
        entry.updated_at = now_iso()
        if event:
            entry.history.append({"at": entry.updated_at, "state": entry.state, "event": event})
        self.storage.write_json(self.rel(entry.key), entry.model_dump(mode="json"))
        return entry
