"""Client CPU seconds per job, while many jobs share one event loop and a thread pool.

``metered(coro)`` runs a job's coroutine and counts the CPU time of each of its steps on the event
loop thread (``time.thread_time`` around every resume of the coroutine: the job's own parsing,
HTTP handling, ledger JSON); ``to_thread(fn, …)`` runs blocking work (probe, verification,
hashing) in a worker thread and adds that thread's CPU time to the same job. Both find the job's
meter through a context variable, which ``asyncio`` copies into tasks and ``to_thread`` calls.
Native threads a library starts on its own (a codec's frame threads) are not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class CpuMeter:
    loop_s: float = 0.0
    thread_s: float = 0.0

    @property
    def total_s(self) -> float:
        return round(self.loop_s + self.thread_s, 4)


METER: ContextVar[CpuMeter | None] = ContextVar("matteflow_cpu_meter", default=None)


def current_cpu_s() -> float | None:
    """CPU seconds the running job has used so far (None outside ``metered``)."""
    meter = METER.get()
    return meter.total_s if meter is not None else None


class _Metered:
    """Awaitable that drives ``coro`` and times each of its steps on the calling thread."""

    def __init__(self, coro: Coroutine[Any, Any, Any], meter: CpuMeter) -> None:
        self.coro = coro
        self.meter = meter

    def __await__(self) -> Generator[Any, Any, Any]:
        gen = self.coro.__await__()
        send: Any = None
        throw: BaseException | None = None
        while True:
            t0 = time.thread_time()
            try:
                yielded = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as stop:
                return stop.value
            finally:
                self.meter.loop_s += time.thread_time() - t0
            try:
                send, throw = (yield yielded), None
            except BaseException as exc:  # cancellation and errors go into the job's coroutine
                send, throw = None, exc


async def metered(coro: Coroutine[Any, Any, T], meter: CpuMeter) -> T:
    """Run ``coro`` with ``meter`` as the job's meter; its CPU time accumulates there."""
    token = METER.set(meter)
    try:
        result: T = await _Metered(coro, meter)
        return result
    finally:
        METER.reset(token)


def _thread_timed(fn: Callable[P, T]) -> Callable[P, T]:
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            meter = METER.get()
            if meter is not None:
                meter.thread_s += time.thread_time() - t0

    return run


async def to_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread`` whose thread CPU time is added to the running job's meter."""
    return await asyncio.to_thread(_thread_timed(fn), *args, **kwargs)
