"""The typed parameters of the main flow: a form in the Prefect UI, flags in the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.endpoints import ENDPOINTS, EndpointName
from tasks.endpoints.birefnet import (
    BirefnetModel,
    OperatingResolution,
    VideoOutputType,
    VideoQuality,
    VideoWriteMode,
)
from tasks.endpoints.local import LocalModel
from tasks.endpoints.options import Background
from tasks.media.formats import OutputFormat
from tasks.media.verify import VerifySettings

# A shard's run name is its parent's plus "/shards/NNN", so its reports sit under the parent's.
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/shards/[0-9]{3,6})?$"

# Endpoint options a run may set for all its rows (rows may override them in the manifest).
OPTION_KEYS = (
    "background",
    "background_color",
    "output_format",
    "smoothing",
    "model",
    "operating_resolution",
    "output_mask",
    "refine_foreground",
    "sync_mode",
    "video_output_type",
    "video_quality",
    "video_write_mode",
)


class RunParams(BaseModel):
    """One catalog run. Secrets never go here: FAL_KEY and S3 keys come from the environment."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="Manifest URL (CSV, JSONL or Parquet; local path, s3://…).")
    endpoint: EndpointName = Field(EndpointName.local, description="Removal endpoint.")
    output: str = Field("./output", description="Output root URL (local path, file://, s3://).")
    run_name: str | None = Field(
        None,
        description="Name of the run's report folder; default: a timestamp.",
        pattern=RUN_NAME_PATTERN,
    )
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
    model: BirefnetModel | LocalModel | None = Field(
        None,
        description="birefnet: model variant; local: selfie (people), general (products, any "
        "salient object), selfie_landscape or onnx.",
    )
    operating_resolution: OperatingResolution | None = Field(
        None, description="birefnet: resolution the model runs at (2304x2304 needs Dynamic)."
    )
    output_mask: bool | None = Field(None, description="birefnet: also store the matte video.")
    refine_foreground: bool | None = Field(None, description="birefnet: refine edges.")
    sync_mode: bool | None = Field(None, description="birefnet: outputs inline, not on fal's CDN.")
    video_output_type: VideoOutputType | None = Field(
        None, description="birefnet: output container and codec (default VP9 .webm)."
    )
    video_quality: VideoQuality | None = Field(None, description="birefnet: encoder quality.")
    video_write_mode: VideoWriteMode | None = Field(
        None, description="birefnet: encoder speed/size trade-off."
    )
    resubmit_unknown: bool = Field(
        False,
        description="fal: submit again the jobs whose earlier submit has an unknown outcome "
        "(check the fal dashboard first: it may be billed twice).",
    )
    retry_failed: bool = Field(
        False, description="fal: submit again the jobs fal reported as failed in earlier runs."
    )
    fal_uploads: bool | None = Field(
        None, description="fal: upload local input files to fal's storage (default on)."
    )
    presign_expiry_s: int | None = Field(
        None, gt=60, description="fal: lifetime of presigned URLs for s3:// inputs (default 6 h)."
    )
    allow_local_inputs: bool = Field(
        False,
        description="Read file:// and local-path inputs (and manifest) from the disk of the "
        "machine that runs the flow. The CLI turns it on; workers with "
        "MATTEFLOW_INPUT_DENY_LOCAL=true refuse local inputs whatever this says.",
    )
    local_input_roots: list[str] = Field(
        default_factory=list,
        description="Folders whose files may be read as inputs even without allow_local_inputs.",
    )
    max_in_flight: int | None = Field(
        None, ge=1, le=1000, description="Jobs in flight at once (default per endpoint)."
    )
    budget_usd: float | None = Field(None, ge=0, description="Stop submitting past this spend.")
    submit_rate: float | None = Field(
        None, gt=0, le=1000, description="Job starts per second at most (default per endpoint)."
    )
    shared_limit: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Prefect global concurrency limit shared by every worker on one fal account;"
        " created (or resized) to max_in_flight by the run. None: the cap is per process.",
    )
    task_run_per_job: bool | None = Field(
        None,
        description="One Prefect task run per job; default: only for runs of at most"
        " 200 jobs (a task run per job costs the server more than the job at catalog scale).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint URL (MinIO, SeaweedFS, R2…)."
    )
    verify: VerifySettings = Field(
        default_factory=VerifySettings,
        description="Output checks: matte thresholds, and whether to retry a failed output once.",
    )
    shard_size: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="Jobs per shard: each shard runs as its own flow run, on any worker "
        "(from a deployment) or one after another in this process. Empty or 0: no sharding.",
    )

    def resolved_run_name(self) -> str:
        return self.run_name or datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")

    def run_options(self) -> dict[str, Any]:
        """Endpoint options set for the whole run (rows may override them)."""
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _options_fit_endpoint(self) -> RunParams:
        fields = ENDPOINTS[self.endpoint].option_fields
        foreign = sorted(k for k in self.run_options() if k not in fields)
        if foreign:
            raise ValueError(
                f"{', '.join(foreign)}: not an option of endpoint {self.endpoint.value} "
                f"(it takes {', '.join(sorted(fields))})"
            )
        return self


DEFAULT_MAX_IN_FLIGHT = {
    EndpointName.local: 2,
    EndpointName.pixelcut: 10,
    EndpointName.birefnet: 10,
}
# Job starts per second: fal accepts bursts (queued requests wait, never rejected), so this
# only smooths the first wave; the local engine is bounded by its cap alone.
DEFAULT_SUBMIT_RATE = {
    EndpointName.local: 1000.0,
    EndpointName.pixelcut: 50.0,
    EndpointName.birefnet: 50.0,
}
TASK_RUN_PER_JOB_UP_TO = 200
