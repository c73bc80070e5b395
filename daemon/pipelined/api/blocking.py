"""Calling the (blocking, thread-safe) `Control` from async handlers without starving anything.

Every Control call runs in a worker thread. Three pools keep one kind of call from using up
the threads another needs: ordinary calls share anyio's default limiter; calls that wait for
something (a run, a drain, a reload, a config write) get their own; and `/health` / `/ready`
get a small one so probes answer even while every waiting slot is taken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter
from litestar import Request

from pipelined.supervisor.control import Control

T = TypeVar("T")

WAITING_CALLS = 64
PROBE_CALLS = 4


@dataclass
class Limiters:
    waiting: CapacityLimiter
    probes: CapacityLimiter


def make_limiters() -> Limiters:
    """Create inside the event loop (Litestar `on_startup`)."""
    return Limiters(waiting=CapacityLimiter(WAITING_CALLS), probes=CapacityLimiter(PROBE_CALLS))


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


async def call_waiting(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    """A Control call that may block for long (wait for a run / drain / reload)."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiters(request).waiting)


async def call_probe(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiters(request).probes)
