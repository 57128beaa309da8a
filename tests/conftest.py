"""Shared fixtures: tiny generated clips, one Prefect harness per session, a SeaweedFS S3.

The whole session runs with canary secrets (tests/hardening/canary.py): at its end every file
under pytest's temporary folder, and every test's captured output, is scanned for them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.media.samples import make_composite_clip, make_person_clip
from tests.fakes.fal_server import FakeFal
from tests.fakes.seaweed import SeaweedS3
from tests.hardening.canary import canary_env, leaks_in_files, leaks_in_text, live_run

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


_LIVE = False


def pytest_configure(config: pytest.Config) -> None:
    global _LIVE
    _LIVE = live_run(str(config.option.markexpr or ""))


@pytest.fixture(scope="session", autouse=True)
def canary_secrets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Recognisable FAL_KEY / S3 secret for the session, unless it is a live run.

    Also allow-lists pytest's temporary folder for local inputs, as a worker operator would
    (``MATTEFLOW_INPUT_LOCAL_ROOTS``): flow tests read clips from there without the CLI's flag.
    """
    patch = pytest.MonkeyPatch()
    env = {} if _LIVE else canary_env()
    for name, value in env.items():
        patch.setenv(name, value)
    roots = [str(tmp_path_factory.getbasetemp().resolve())]
    patch.setenv("MATTEFLOW_INPUT_LOCAL_ROOTS", json.dumps(roots))
    try:
        yield env
    finally:
        patch.undo()


_LEAKS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every test's captured stdout, stderr, log and failure text is scanned for the canaries."""
    if _LIVE:
        return
    for name, text in report.sections:
        _LEAKS.extend(leaks_in_text(text, f"{report.nodeid} [{name}]"))
    if report.longrepr is not None:
        _LEAKS.extend(leaks_in_text(report.longreprtext, f"{report.nodeid} [failure]"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a canary secret reached any file or captured output."""
    if _LIVE:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    leaks = sorted(set(_LEAKS))
    if basetemp is not None and Path(basetemp).is_dir():
        _, found = leaks_in_files(Path(basetemp))
        leaks += found
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n".join(leaks[:50])
        if reporter is not None:
            reporter.write_line(f"SECRET LEAK: canary secrets found in:\n{lines}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
