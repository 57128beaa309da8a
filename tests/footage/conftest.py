"""The real-footage corpus (``make footage``); its tests skip only when that target was not run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CLIPS = ("Megamind.avi", "Megamind_bugy.avi", "box.mp4", "cup.mp4", "tree.avi", "vtest.avi")


def footage_dir() -> Path:
    """Where ``make footage`` left the clips (``MATTEFLOW_FOOTAGE`` overrides the default)."""
    default = Path.home() / ".cache" / "matteflow" / "footage" / "clips"
    return Path(os.environ.get("MATTEFLOW_FOOTAGE", default))


@pytest.fixture(scope="session")
def footage() -> Path:
    d = footage_dir()
    if not (d / ".verified").exists():
        pytest.skip(f"no footage in {d}: run `make footage`")
    missing = [name for name in CLIPS if not (d / name).is_file()]
    assert not missing, f"make footage left {d} without {missing}: run it again"
    return d
