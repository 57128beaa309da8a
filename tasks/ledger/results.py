"""The results row: the run's main contract, one typed column each, and its one Arrow schema.

``results.parquet`` and ``results.csv`` are written from ``ResultRow`` through ``RESULT_SCHEMA``,
so every run has the same column types whatever its rows (an all-invalid run included): a
catalog team can load many runs into one DuckDB or pandas table.
"""

from __future__ import annotations

import types
from datetime import datetime
from enum import Enum
from typing import Any, Protocol, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tasks.errors import ErrorCode
from tasks.ledger.jobs import Job, LedgerEntry, Status, now_iso
from tasks.storage.store import redact_url

# Columns copied as they are from the job's ledger entry.
ENTRY_COLUMNS = ["error_code", "error", "request_id", "attempts", "output_url", "mask_url"]
ENTRY_COLUMNS += ["bytes", "sha256", "estimated_cost_usd", "cost_usd"]
ERROR_MAX_CHARS = 500  # a row's error is a reason, not a traceback (that goes to the log)


class ResultRow(BaseModel):
    """One row of the results table; the first 27 columns are DESIGN.md's contract."""

    model_config = ConfigDict(extra="forbid")

    row: int
    id: str | None = None
    video_url: str | None = None
    job_key: str | None = None
    endpoint: str | None = None
    status: Status
    error_code: ErrorCode | None = None  # exactly one code; verification lists its reasons below
    error: str | None = None
    request_id: str | None = None
    attempts: int | None = None
    output_url: str | None = None
    mask_url: str | None = None
    output_format: str | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    has_alpha: bool | None = None
    verified: bool | None = None
    bytes: int | None = None
    sha256: str | None = None
    estimated_cost_usd: float = 0.0
    cost_usd: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None
    duplicate_of: int | None = None  # the manifest row whose job this row repeats
    fg_fraction: float | None = None
    flicker: float | None = None
    verify_reasons: str | None = None  # every failed check's code, comma-separated
    run_name: str | None = None  # the run whose report holds the row (set by the flow)
    flow_run_id: str | None = None  # the Prefect flow run that produced the row
    # fal's FAQ: a 422 (invalid input) may still be charged: its estimate, counted against the
    # budget and in the cost report, though ``cost_usd`` stays what fal surely billed.
    possibly_billed_usd: float = 0.0
    verify_s: float | None = None  # seconds verifying the output
    cpu_s: float | None = None  # client CPU seconds the job used (tasks.run.cpu)
    status_via: str | None = None  # how fal's COMPLETED was seen: stream | poll | stream>poll
    status_polls: int | None = None  # status GETs sent for the job
    detect_delay_s: float | None = None  # bound on how late the completion was seen

    @model_validator(mode="before")
    @classmethod
    def _known_columns(cls, values: Any) -> Any:
        """An unknown column is a bug in the caller: KeyError, as for a missing dict key."""
        if isinstance(values, dict):
            unknown = set(values) - set(cls.model_fields)
            if unknown:
                raise KeyError(f"unknown result columns: {sorted(unknown)}")
        return values

    @field_validator("estimated_cost_usd", "cost_usd", "possibly_billed_usd", mode="before")
    @classmethod
    def _zero_cost(cls, value: Any) -> Any:
        return 0.0 if value is None else value

    @field_validator("video_url", "output_url", "mask_url")
    @classmethod
    def _redacted(cls, value: str | None) -> str | None:
        """URLs lose their query strings (presigned signatures are secrets)."""
        return redact_url(value) if value else value

    def __getitem__(self, column: str) -> Any:
        """Read a column by name, as in the table the row ends up in."""
        if column not in type(self).model_fields:
            raise KeyError(column)
        return getattr(self, column)

    @classmethod
    def from_entry(cls, job: Job, entry: LedgerEntry, status: Status, **extra: Any) -> ResultRow:
        """The row of a job that ran: what its ledger entry recorded, plus ``extra``."""
        probe = (entry.verification or {}).get("probe") or {}

        def measured(name: str) -> Any:
            return probe.get(name, entry.metrics.get(name))

        values: dict[str, Any] = dict(
            row=job.row,
            id=job.id,
            video_url=job.video_url,
            job_key=job.key,
            endpoint=job.endpoint,
            status=status,
            **{k: getattr(entry, k) for k in ENTRY_COLUMNS},
            output_format=entry.metrics.get("output_format"),
            **{k: measured(k) for k in ("frames", "width", "height", "fps", "duration_s")},
            has_alpha=probe.get("has_alpha"),
            verified=(entry.verification or {}).get("ok"),
            possibly_billed_usd=entry.metrics.get("possibly_billed_usd", 0.0),
            **verification_columns(entry.verification),
            # A reused output did none of that work in this run.
            **{
                k: None if status is Status.skipped else entry.metrics.get(k) for k in SPEED_COLUMNS
            },
        )
        if status is Status.skipped:  # and paid nothing in it
            values.update(cost_usd=0.0, possibly_billed_usd=0.0)
        values.update(extra)
        return cls(**values)


RESULT_COLUMNS = list(ResultRow.model_fields)
# What the job's work cost and how fast fal's completion was seen (ledger metrics of that name).
SPEED_COLUMNS = ("verify_s", "cpu_s", "status_via", "status_polls", "detect_delay_s")


class PlannedRow(Protocol):
    """A manifest row that never became a job (invalid): what identifies it in the table."""

    @property
    def row(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def video_url(self) -> str: ...


def ended_row(
    job: Job | PlannedRow,
    status: Status,
    code: ErrorCode,
    error: str,
    **extra: Any,
) -> ResultRow:
    """The row of a job that ended without running: invalid, refused by the budget, cancelled,
    crashed, its storage away, or its shard lost. ``extra`` adds or overrides columns."""
    values: dict[str, Any] = dict(
        row=job.row,
        id=job.id,
        video_url=job.video_url,
        status=status,
        error_code=code,
        error=error[:ERROR_MAX_CHARS],
        attempts=0,
        finished_at=now_iso(),
    )
    if isinstance(job, Job):
        values.update(
            job_key=job.key, endpoint=job.endpoint, estimated_cost_usd=job.estimated_cost_usd
        )
    values.update(extra)
    return ResultRow(**values)


def verification_columns(verification: dict[str, Any] | None) -> dict[str, Any]:
    """The results columns taken from a ``VerifyReport.as_dict()`` kept in the ledger."""
    verification = verification or {}
    found = verification.get("probe") or {}
    codes = [r.get("code", "") for r in verification.get("reasons") or []]
    return {
        "fg_fraction": found.get("fg_fraction"),
        "flicker": found.get("flicker"),
        "verify_reasons": ",".join(codes) if verification else None,
    }


_ARROW_TYPES: dict[type, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    str: pa.string(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> pa.DataType:
    """``X | None`` -> the Arrow type of X (every column is nullable); enums are strings."""
    if get_origin(annotation) in (Union, types.UnionType):
        (inner,) = [a for a in get_args(annotation) if a is not type(None)]
        return _arrow_type(inner)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return pa.string()
    return _ARROW_TYPES[annotation]


RESULT_SCHEMA = pa.schema(
    [pa.field(name, _arrow_type(f.annotation)) for name, f in ResultRow.model_fields.items()]
)


def results_table(rows: list[ResultRow]) -> pa.Table:
    """The rows in manifest order, typed by ``RESULT_SCHEMA`` (never by the values seen)."""
    ordered = sorted(rows, key=lambda r: r.row)
    return pa.Table.from_pylist([r.model_dump() for r in ordered], schema=RESULT_SCHEMA)


def rows_from_table(table: pa.Table) -> list[ResultRow]:
    """Rows read back from a results table (a shard's ``results.parquet``)."""
    return [ResultRow.model_validate(record) for record in table.to_pylist()]
