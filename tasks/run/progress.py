"""Progress of a run: counts per status, and listeners (a terminal bar) that follow them.

The flow cannot take a callback as a parameter (parameters must serialise for the UI), so a
caller in the same process (the CLI) registers listeners in a context variable before it starts
the flow; deployments run with none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from tasks.ledger.results import ResultRow
from tasks.report.tables import progress_line


class ProgressListener(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, row: ResultRow, progress: RunProgress) -> None: ...

    def stop(self, progress: RunProgress) -> None: ...


_LISTENERS: ContextVar[tuple[ProgressListener, ...]] = ContextVar(
    "matteflow_progress_listeners", default=()
)


@contextmanager
def listening(*listeners: ProgressListener) -> Iterator[None]:
    """Make ``listeners`` follow every run started inside the block (same process)."""
    token = _LISTENERS.set(_LISTENERS.get() + listeners)
    try:
        yield
    finally:
        _LISTENERS.reset(token)


@dataclass
class RunProgress:
    """Jobs done out of ``total``, by status; fed one row at a time by the worker pool."""

    total: int
    done: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    listeners: tuple[ProgressListener, ...] = field(default_factory=lambda: _LISTENERS.get())

    def start(self) -> None:
        for listener in self.listeners:
            listener.start(self.total)

    def advance(self, row: ResultRow) -> None:
        self.done += 1
        self.by_status[row.status.value] += 1
        self.cost_usd += row.cost_usd
        for listener in self.listeners:
            listener.advance(row, self)

    def stop(self) -> None:
        for listener in self.listeners:
            listener.stop(self)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 2)

    def describe(self) -> str:
        return f"{progress_line(self.done, self.total, self.by_status)}; ${self.cost_usd:.4f} spent"
