"""What fal's video endpoints return: a file on fal's CDN with its metadata."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tasks.ledger.handles import FalFile


class FalOutputs(BaseModel):
    video: FalFile
    mask_video: FalFile | None = None


def parse_outputs(result: dict[str, Any]) -> FalOutputs:
    """The output files of a result; raises ``pydantic.ValidationError`` when there is no video."""
    return FalOutputs.model_validate(result)
