"""What fal's video endpoints return: a file on fal's CDN with its metadata."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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


class FalOutputs(BaseModel):
    video: FalFile
    mask_video: FalFile | None = None


def parse_outputs(result: dict[str, Any]) -> FalOutputs:
    """The output files of a result; raises ``pydantic.ValidationError`` when there is no video."""
    return FalOutputs.model_validate(result)
