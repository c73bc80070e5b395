"""Calling the (blocking, thread-safe) `Control` from async handlers without starving anything.

Waiting for a run or a drain (`?wait=true`) holds no thread at all: the handler polls the
Control's non-blocking check on the event loop (`wait_until`), so any number of waiting callers
costs nothing but their connections. Every other Control call runs in a worker thread, from a
pool of its kind, so one kind never uses up the threads another needs:
- `call`: reads (stats, runs, pipelines, dead letters, graph, metrics) — anyio's default limiter;
- `call_trigger`: triggers, which may block up to 10 s (a swap) or 5 s (a full queue);
- `call_control`: reload, start, drain, config writes — control operations, which must answer
  whatever the callers of the other kinds are doing;
- `call_probe`: `/health` and `/ready`, a small pool of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter
from litestar import Request

from pipelined.supervisor.control import Control

T = TypeVar("T")

TRIGGER_CALLS = 64
CONTROL_CALLS = 16
PROBE_CALLS = 4
POLL_FIRST_S = 0.001
POLL_MAX_S = 0.05


@dataclass
class Limiters:
    triggers: CapacityLimiter
    control: CapacityLimiter
    probes: CapacityLimiter


def make_limiters() -> Limiters:
    """Create inside the event loop (Litestar `on_startup`)."""
    return Limiters(
        triggers=CapacityLimiter(TRIGGER_CALLS),
        control=CapacityLimiter(CONTROL_CALLS),
        probes=CapacityLimiter(PROBE_CALLS),
    )


def control_of(request: Request[Any, Any, Any]) -> Control:
    control: Control = request.app.state["control"]
    return control


def _limiters(request: Request[Any, Any, Any]) -> Limiters:
    limiters: Limiters | None = request.app.state.get("limiters")
    if limiters is None:
        limiters = make_limiters()
        request.app.state["limiters"] = limiters
    return limiters


async def call(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    """An ordinary Control call, in anyio's default thread pool."""
    return await anyio.to_thread.run_sync(fn, *args)


async def call_trigger(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    """A trigger (may block for seconds while a swap or a full queue holds it)."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiters(request).triggers)


async def call_control(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    """A control operation (reload, start, drain, config write): a pool no other kind uses."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiters(request).control)


async def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll a non-blocking `check` on the event loop until it is true (True) or `timeout`
    seconds passed (False); the interval grows from 1 ms to 50 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    interval = POLL_FIRST_S
    while not check():
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, POLL_MAX_S)
    return True


async def call_probe(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiters(request).probes)
