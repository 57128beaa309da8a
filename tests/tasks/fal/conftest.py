"""Fixtures of the fal runner tests: the run's storage and a pixelcut runner on the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tasks.fal.job import FalRunner
from tasks.ledger.jobs import Job
from tasks.storage.store import Storage
from tests.fakes.fal_server import FakeFal
from tests.tasks.fal.test_job import make_job, runner_for


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "out"))


@pytest.fixture
async def runner(fake_fal: FakeFal) -> AsyncIterator[FalRunner]:
    """A pixelcut runner on the fake fal server, closed after the test."""
    pixelcut = runner_for(fake_fal, "pixelcut")
    yield pixelcut
    await pixelcut.aclose()


@pytest.fixture
def person_job(fake_fal: FakeFal, clips: dict[str, Path]) -> Callable[..., Job]:
    """Pixelcut jobs of the person clip on the fake CDN (served as ``name`` when given)."""

    def job(name: str | None = None, row_id: str = "a") -> Job:
        return make_job(fake_fal.serve_file(clips["person"], name), "pixelcut", row_id)

    return job
