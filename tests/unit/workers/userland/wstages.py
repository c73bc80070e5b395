"""User stage code run inside worker processes by the tests (imported via python_path)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("wstages")


def double(item: int) -> int:
    return item * 2


def add(item: int, amount: int = 0) -> int:
    return item + amount


def pid_of(item: Any) -> int:
    return os.getpid()


def keep_even(item: int) -> int | None:
    return item if item % 2 == 0 else None


def spread(item: int) -> Any:
    yield from range(item)


def router(item: int, ctx: Any) -> None:
    ctx.emit(("plain", item))
    ctx.emit_to("sink", item)
    if item == 3:
        ctx.emit_to("nowhere", item)


async def async_double(item: int) -> int:
    return item * 2


async def async_spread(item: int) -> Any:
    for n in range(item):
        yield n


def boom(item: int) -> int:
    if item == 2:
        raise ValueError(f"bad item {item}")
    return item


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # needs two arguments: does not unpickle
        super().__init__(a)


def raise_unpicklable(item: int) -> int:
    raise Unpicklable(item, item)


def lambda_result(item: int) -> Any:
    if item == 1:
        return lambda: item
    return item


def kill_self_on(item: Any) -> Any:
    """Item "die" kills its own worker with SIGKILL in the middle of processing it."""
    if item == "die":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    return item


def kill_marked(item: Any, marker: str = "") -> Any:
    """Kills its worker for item "die" only the first time (a marker file records it)."""
    if item == "die" and not Path(marker).exists():
        Path(marker).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def exit_on(item: Any) -> Any:
    if item == "exit":
        os._exit(3)
    return item


def log_item(item: Any, ctx: Any) -> Any:
    ctx.logger.warning("seen %s", item)
    log.warning("plain logger %s", item)
    return item


def burn(item: int) -> int:
    """About 1 ms of pure-Python CPU work."""
    total = 0
    for n in range(item):
        total += n * n % 7
    return total


def slow(item: float) -> float:
    time.sleep(item)
    return item


HOOK_LOG = os.environ.get("WSTAGES_HOOK_LOG", "")


def _record(event: str) -> None:
    path = os.environ.get("WSTAGES_HOOK_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {os.getpid()} {threading.active_count()}\n")


def pipeline_before_fork() -> None:
    _record("pipeline_before_fork")


def stage_before_fork() -> None:
    _record("stage_before_fork")


def pipeline_after_fork() -> None:
    _record("pipeline_after_fork")


def stage_after_fork() -> None:
    _record("stage_after_fork")


def failing_hook() -> None:
    raise RuntimeError("hook exploded")


class Scorer:
    """A class stage: instantiated once per worker with args; setup()/close() recorded in a file."""

    def __init__(self, record: str, factor: int = 1) -> None:
        self.record = record
        self.factor = factor
        self.ready = False

    def setup(self) -> None:
        self.ready = True
        with open(self.record, "a") as f:
            f.write(f"setup {os.getpid()}\n")

    def __call__(self, item: int) -> tuple[int, int]:
        assert self.ready
        return item * self.factor, os.getpid()

    def close(self) -> None:
        with open(self.record, "a") as f:
            f.write(f"close {os.getpid()}\n")


class FailingSetup:
    def __init__(self) -> None:
        pass

    def setup(self) -> None:
        raise RuntimeError("no model file")

    def __call__(self, item: Any) -> Any:
        return item


def items_of(values: list[Any] | None = None) -> Any:
    """A producer: yields the given values."""
    yield from values or []


COLLECTED: list[Any] = []


def collect(item: Any) -> None:
    COLLECTED.append(item)


def count_up(n: int = 3, fail_at: int = -1) -> Any:
    """A producer: 0..n-1, raising at `fail_at`."""
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"producer broke at {i}")
        yield (i, os.getpid())


def endless(ctx: Any) -> Any:
    """A producer that runs until the run is cancelled (ctx.stopping) or closed."""
    i = 0
    while not ctx.stopping:
        yield i
        i += 1
        time.sleep(0.001)


def route_from_producer(ctx: Any) -> Any:
    ctx.emit_to("sink", "routed")
    yield "plain"


def segfault_on(item: Any) -> Any:
    if item == "segv":
        import ctypes

        ctypes.string_at(0)
    return item
