"""Fixtures of the hardening suite, and its tally: inputs tried, faults injected, rows lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.fakes.http_files import HttpFiles

TALLY: Counter[str] = Counter()


@pytest.fixture
def tally() -> Counter[str]:
    """Tests add what they tried: ``inputs``, ``faults``, ``rows``, ``rows_lost``…"""
    return TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items()))
        terminalreporter.write_line(f"hardening tally: {parts}")


@pytest.fixture
def http_files() -> Iterator[HttpFiles]:
    server = HttpFiles().start()
    try:
        yield server
    finally:
        server.stop()


class EllipseSegmenter:
    """A cheap deterministic matte, so input tests spend no time in the model."""

    def __call__(self, rgb: Any) -> Any:
        h, w = rgb.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = ((xx - w / 2) / (w * 0.3)) ** 2 + ((yy - h / 2) / (h * 0.4)) ** 2
        return np.clip(1.5 - d, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        pass
