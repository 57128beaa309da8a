"""The `matteflow run` command line, as the subprocess tests launch it (a user's own command)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_command(manifest: Path, output: Path | str, run_name: str, *options: str) -> list[str]:
    """``python -m flows.cli run MANIFEST --output OUT --run-name NAME [options]``."""
    cmd = [sys.executable, "-m", "flows.cli", "run", str(manifest), "--output", str(output)]
    return [*cmd, "--run-name", run_name, *options]
