"""The typed parameters of the main flow: a form in the Prefect UI, flags in the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.endpoints import EndpointName
from tasks.formats import OutputFormat
from tasks.options import Background

# A shard's run name is its parent's plus "/shards/NNN", so its reports sit under the parent's.
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/shards/[0-9]{3,6})?$"


class RunParams(BaseModel):
    """One catalog run. Secrets never go here: FAL_KEY and S3 keys come from the environment."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="Manifest URL (CSV, JSONL or Parquet; local path, s3://…).")
    endpoint: EndpointName = Field(EndpointName.local, description="Removal endpoint.")
    output: str = Field("./output", description="Output root URL (local path, file://, s3://).")
    run_name: str | None = Field(
        None, description="Name of the run's report folder; default: a timestamp.",
        pattern=RUN_NAME_PATTERN,
    )  # fmt: skip
    background: Background | None = Field(None, description="Background (default transparent).")
    background_color: str | None = Field(
        None, description="R,G,B colour for background=custom, e.g. 0,177,64."
    )
    output_format: OutputFormat | None = Field(
        None, description="Output format; default webm_vp9 when transparent, else mp4_h264."
    )
    smoothing: float | None = Field(
        None, gt=0.0, le=1.0, description="Local engine: weight of the newest matte (1 = off)."
    )
    max_in_flight: int | None = Field(
        None, ge=1, le=1000, description="Jobs in flight at once (default per endpoint)."
    )
    budget_usd: float | None = Field(None, ge=0, description="Stop submitting past this spend.")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint URL (MinIO, SeaweedFS, R2…)."
    )
    shard_size: int | None = Field(
        None, ge=0, le=1_000_000,
        description="Jobs per shard: each shard runs as its own flow run, on any worker "
        "(from a deployment) or one after another in this process. Empty or 0: no sharding.",
    )  # fmt: skip

    def resolved_run_name(self) -> str:
        return self.run_name or datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")

    def run_options(self) -> dict[str, Any]:
        """Endpoint options set for the whole run (rows may override them)."""
        keys = ("background", "background_color", "output_format", "smoothing")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


DEFAULT_MAX_IN_FLIGHT = {
    EndpointName.local: 2,
    EndpointName.pixelcut: 10,
    EndpointName.birefnet: 10,
}
