"""Threads for the engine's stages, joined by small bounded queues.

The first error in any stage stops them all; the main thread re-raises it. Queues are bounded so
memory stays flat however long the video is.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

QUEUE_FRAMES = 6  # per queue: enough to ride out jitter between stages, small for memory
END = object()  # the last item a stage puts on its queue


class Cancelled(Exception):
    """Another stage failed: stop quietly, its error is the one reported."""


class StageThreads:
    """Runs producer stages in threads; the first error stops them all and is re-raised."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.busy: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def new_queue(self) -> queue.Queue[Any]:
        return queue.Queue(QUEUE_FRAMES)

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Cancelled

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise Cancelled

    def drain(self, q: queue.Queue[Any]) -> Iterator[Any]:
        """Every item on ``q`` up to its ``END``."""
        while (item := self.get(q)) is not END:
            yield item

    def start(self, name: str, body: Callable[[], None], out: queue.Queue[Any]) -> None:
        """Run ``body`` in a thread; ``END`` goes on ``out`` when it returns, fails or stops."""

        def run() -> None:
            try:
                body()
            except Cancelled:
                pass
            except BaseException as exc:  # handed to the main thread, which re-raises it
                self.errors.append(exc)
                self.stop.set()
            finally:
                with contextlib.suppress(Cancelled):
                    self.put(out, END)

        thread = threading.Thread(target=run, name=f"matteflow-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def timed(self, name: str, t0: float) -> float:
        """Add the time since ``t0`` to stage ``name``; returns now."""
        t1 = time.perf_counter()
        self.busy[name] = self.busy.get(name, 0.0) + t1 - t0
        return t1

    def finish(self) -> None:
        """Stop every stage and wait for them."""
        self.stop.set()
        for thread in self._threads:
            thread.join()

    def raise_first_error(self) -> None:
        if self.errors:
            raise self.errors[0]
