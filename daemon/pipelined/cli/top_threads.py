"""Requests of `pipelined top`'s live view run in threads of their own, awaited from Textual's
event loop: a daemon that does not answer never blocks the view, and quitting never waits for it
(asyncio.to_thread's executor would be joined at exit, for the whole request timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pipelined.cli.top_source import PollResult

T = TypeVar("T")


async def in_thread(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in a daemon thread of its own. Unlike asyncio.to_thread, quitting never waits
    for it: a request to a daemon that hangs would hold `q` for its whole timeout."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = call(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the app (and its loop) ended meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="top-request", daemon=True).start()
    return await future


async def settled(pending: Future[T]) -> T:
    """Await a concurrent future set by a thread (the first poll) the way in_thread does: a loop
    that ended meanwhile is left alone (asyncio.wrap_future would call into a closed loop)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(done: Future[T]) -> None:
        if future.done():
            return
        error = done.exception()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result())

    def relay(done: Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the app (and its loop) ended meanwhile
            loop.call_soon_threadsafe(settle, done)

    pending.add_done_callback(relay)
    return await future


def outcome(future: Future[PollResult]) -> PollResult:
    """A finished poll's result (a poll that raised: its error, shown and retried)."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001
        return PollResult(problem=f"{type(exc).__name__}: {exc}")
