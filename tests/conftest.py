"""Shared fixtures: tiny generated clips, one Prefect harness per session, a SeaweedFS S3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.samples import make_composite_clip, make_person_clip
from tests.fakes.fal_server import FakeFal
from tests.fakes.seaweed import SeaweedS3

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny inputs: a 64x48 person clip with audio, and a composite with its true alpha."""
    d = tmp_path_factory.mktemp("clips")
    person = make_person_clip(d / "person.mp4", width=64, height=48, seconds=0.4, fps=20)
    silent = make_person_clip(
        d / "silent.mp4", width=64, height=48, seconds=0.4, fps=20, audio=False
    )
    comp = make_composite_clip(
        d / "composite.mp4", d / "composite_alpha.mkv", width=96, height=64, seconds=0.6, fps=20
    )
    return {
        "person": person,
        "silent": silent,
        "composite": comp,
        "truth": d / "composite_alpha.mkv",
    }


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One real Prefect server (temporary, SQLite) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the test S3 server; returns its s3:// URL."""
    import s3fs

    fs = s3fs.S3FileSystem(**seaweed.storage_options())
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture
def fake_fal(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeFal]:
    """A fresh fake fal queue server on loopback; FAL_KEY/FAL_QUEUE_URL/FAL_REST_URL point at it."""
    with FakeFal(tmp_path_factory.mktemp("fakefal")) as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        yield fake
