"""Stage callables and hooks used by the engine tests (`call = "engine_stagefns:name"`).

State is kept in module dicts keyed by a per-test `key` argument so tests never share it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

COLLECTED: dict[str, list[Any]] = defaultdict(list)
ATTEMPTS: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
EVENTS: dict[str, threading.Event] = defaultdict(threading.Event)
CALLS: dict[str, list[Any]] = defaultdict(list)
_lock = threading.Lock()


def record(key: str, value: Any) -> None:
    with _lock:
        COLLECTED[key].append(value)


# -- producers ---------------------------------------------------------------------------
def count_to(n: int = 10, start: int = 0):  # type: ignore[no-untyped-def]
    yield from range(start, start + n)


def numbers_list(n: int = 5) -> list[int]:
    return list(range(n))


def forever(ctx: Any, pause: float = 0.0):  # type: ignore[no-untyped-def]
    i = 0
    while True:
        yield i
        i += 1
        if pause:
            time.sleep(pause)


def until_stopping(ctx: Any) -> Any:
    i = 0
    while not ctx.stopping:
        ctx.emit(i)
        i += 1
        time.sleep(0.001)
    return []


def raise_after(n: int = 3):  # type: ignore[no-untyped-def]
    yield from range(n)
    raise RuntimeError("source broke")


def gated(key: str, n: int = 3):  # type: ignore[no-untyped-def]
    EVENTS[key].wait(10)
    yield from range(n)


def pause_between(key: str, first: int = 3, then: int = 3):  # type: ignore[no-untyped-def]
    """`first` items, then waits for EVENTS[key], then `then` more (a run that stays open)."""
    yield from range(first)
    EVENTS[key].wait(10)
    yield from range(first, first + then)


async def async_numbers(n: int = 5):  # type: ignore[no-untyped-def]
    for i in range(n):
        await asyncio.sleep(0)
        yield i


class Counter:
    def __init__(self, base: int = 0) -> None:
        self.base = base

    def __call__(self, n: int = 3) -> list[int]:
        return [self.base + i for i in range(n)]


# -- processors --------------------------------------------------------------------------
def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


def add(x: int, amount: int = 1) -> int:
    return x + amount


def evens(x: int) -> int | None:
    return x if x % 2 == 0 else None


def twice(x: Any):  # type: ignore[no-untyped-def]
    yield x
    yield x


def slow(x: Any, delay: float = 0.02) -> Any:
    time.sleep(delay)
    return x


def split_to(x: Any, ctx: Any, target: str = "slow") -> Any:
    ctx.emit_to(target, x)
    return x


async def async_split_to(x: Any, ctx: Any, target: str = "slow") -> None:
    ctx.emit_to(target, x)


def emit_to_nowhere(x: Any, ctx: Any) -> Any:
    ctx.emit_to("no_such_stage", x)
    return x


def flaky(x: Any, key: str, fail_times: int = 1) -> Any:
    with _lock:
        ATTEMPTS[key][x] += 1
        attempt = ATTEMPTS[key][x]
    if attempt <= fail_times:
        raise ValueError(f"flaky {x} attempt {attempt}")
    return x


def always_fail(x: Any) -> Any:
    raise ValueError(f"bad item {x}")


def die_once(x: Any, key: str) -> Any:
    with _lock:
        ATTEMPTS[key][x] += 1
        first = ATTEMPTS[key][x] == 1
    if first and x == 2:
        raise SystemExit("worker thread killed")
    return x


def wait_gate(x: Any, key: str) -> Any:
    EVENTS[key].wait(10)
    return x


async def async_inc(x: int, delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    return x + 1


class Scaler:
    setups: int = 0
    closes: int = 0

    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def setup(self) -> None:
        type(self).setups += 1

    def close(self) -> None:
        type(self).closes += 1

    def __call__(self, x: int) -> int:
        return x * self.factor


class BrokenSetup:
    def setup(self) -> None:
        raise RuntimeError("no database")

    def __call__(self, x: Any) -> Any:
        return x


# -- consumers ---------------------------------------------------------------------------
def collect(item: Any, key: str = "default") -> None:
    record(key, item)


def collect_slowly(item: Any, key: str, delay: float = 0.01) -> None:
    time.sleep(delay)
    record(key, item)


# -- hooks -------------------------------------------------------------------------------
def before_run_hook(run: dict[str, Any]) -> None:
    CALLS["before_run"].append(run)


def after_run_hook(run: dict[str, Any]) -> None:
    CALLS["after_run"].append(run)


def failing_before_run(run: dict[str, Any]) -> None:
    raise RuntimeError("refuse to run")


def failing_after_run(run: dict[str, Any]) -> None:
    CALLS["after_run_attempted"].append(run)
    raise RuntimeError("after_run broke")


def on_error_hook(item: Any, error: BaseException, stage: str) -> None:
    CALLS["on_error"].append((item, str(error), stage))


def failing_on_error(item: Any, error: BaseException, stage: str) -> None:
    CALLS["on_error_attempted"].append(item)
    raise RuntimeError("on_error broke")


class HangingSetup:
    """setup() blocks until the test lets it go (EVENTS["hanging-setup"])."""

    def setup(self) -> None:
        EVENTS["hanging-setup"].wait(30)

    def __call__(self, x: Any) -> Any:
        return x


_active: dict[str, int] = defaultdict(int)
PEAK: dict[str, int] = defaultdict(int)


def overlap(x: Any, key: str = "overlap", delay: float = 0.05) -> Any:
    """Records in PEAK[key] how many calls ran at the same time."""
    with _lock:
        _active[key] += 1
        PEAK[key] = max(PEAK[key], _active[key])
    time.sleep(delay)
    with _lock:
        _active[key] -= 1
    return x


async def async_overlap(x: int, key: str, until: int) -> int:
    """Records in PEAK[key] how many calls were awaited at the same time; each waits (up to 5 s)
    until `until` were, so a stage that awaits that many at once reaches it without luck."""
    with _lock:
        _active[key] += 1
        PEAK[key] = max(PEAK[key], _active[key])
    for _ in range(500):
        if PEAK[key] >= until:
            break
        await asyncio.sleep(0.01)
    with _lock:
        _active[key] -= 1
    return x + 1


def fail_multiples(x: int, of: int = 100, rem: int = 0) -> int:
    """Fails items x with x % of == rem (a fast processor with failures)."""
    if x % of == rem:
        raise ValueError(f"multiple of {of}: {x}")
    return x


def exit_on(x: int, at: int = 7) -> int:
    if x == at:
        raise SystemExit(f"exit on {at}")
    return x


USER_LOG = logging.getLogger("engine_stagefns.user")


def log_every(x: int, every: int = 500) -> int:
    if x % every == 0:
        USER_LOG.warning("saw %s", x)
    return x


# -- memory: items that can be watched with weak references -----------------------------------
class Blob:
    """An item that weak references can follow (to prove nothing keeps it after its run)."""

    def __init__(self, n: int) -> None:
        self.n = n


BLOB_REFS: list[Any] = []


def blobs(n: int = 10):  # type: ignore[no-untyped-def]
    import weakref

    for i in range(n):
        blob = Blob(i)
        BLOB_REFS.append(weakref.ref(blob))
        yield blob


def passthrough(x: Any) -> Any:
    return x


def discard(item: Any) -> None:
    return None


async def async_passthrough(x: Any) -> Any:
    return x


def big_strings(n: int = 4, size: int = 1000):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield str(i) + "x" * (size - 1)


def refuse(x: Any) -> Any:
    raise ValueError(f"refused an item of {len(x)}")
