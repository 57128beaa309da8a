"""Manifests and run parameters as the flow tests write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from flows.params import RunParams


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def pixelcut_params(manifest: Path, output: Path, run_name: str, **options: Any) -> RunParams:
    """A run of ``manifest`` on pixelcut (the fake fal server) into ``output``."""
    return RunParams(
        manifest=str(manifest),
        endpoint="pixelcut",
        output=str(output),
        run_name=run_name,
        **options,
    )
