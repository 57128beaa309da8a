"""Fixtures of the fal runner tests: the run's storage and a pixelcut runner on the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tasks.fal.job import FalRunner
from tasks.storage.store import Storage
from tests.fakes.fal_server import FakeFal
from tests.tasks.fal.test_job import runner_for


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "out"))


@pytest.fixture
async def runner(fake_fal: FakeFal) -> AsyncIterator[FalRunner]:
    """A pixelcut runner on the fake fal server, closed after the test."""
    pixelcut = runner_for(fake_fal, "pixelcut")
    yield pixelcut
    await pixelcut.aclose()
