"""Stage callables for the fresh-eyes review tests: values that behave like real user data
(numpy-like `==`, dataclasses, deep nesting) and callables raising what user code may raise."""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

GOT: dict[str, list[Any]] = defaultdict(list)
_lock = threading.Lock()


class Ambiguous:
    """Like a numpy array: `==` is elementwise (not a bool), bool() raises, unhashable."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, v: Any) -> None:
        self.v = v

    def __eq__(self, other: object) -> Any:  # type: ignore[override]
        return Ambiguous(("eq", self.v))

    def __ne__(self, other: object) -> Any:  # type: ignore[override]
        return Ambiguous(("ne", self.v))

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    def __len__(self) -> int:
        return 2


@dataclass
class Point:
    x: int
    y: int


def to_ambiguous(x: Any) -> Any:
    return Ambiguous(x)


def to_ambiguous_ctx(x: Any, ctx: Any) -> Any:
    return Ambiguous(x)


async def to_ambiguous_async(x: Any) -> Any:
    return Ambiguous(x)


def from_ambiguous(a: Any) -> Any:
    return a.v


def unwrap_batch(batch: list[Any]) -> Any:
    return [a.v for a in batch]


def to_point(x: int) -> Point:
    return Point(x, -x)


def nest(x: int, depth: int = 3000) -> Any:
    v: Any = x
    for _ in range(depth):
        v = [v]
    return v


def fail_ambiguous(a: Any) -> Any:
    raise ValueError(f"bad {a.v}")


def keep(item: Any, key: str) -> None:
    with _lock:
        GOT[key].append(item)


def keep_v(item: Any, key: str) -> None:
    with _lock:
        GOT[key].append(item.v if isinstance(item, Ambiguous) else item)


def raise_at(x: int, what: str, at: int = 3) -> int:
    if x == at:
        if what == "StopIteration":
            raise StopIteration
        if what == "SystemExit":
            sys.exit(3)
        if what == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if what == "GeneratorExit":
            raise GeneratorExit
    return x


def raise_at_ctx(x: int, ctx: Any, what: str, at: int = 3) -> int:
    return raise_at(x, what, at)


async def araise_at(x: int, what: str, at: int = 3) -> int:
    return raise_at(x, what, at)


def gen_raise_at(x: int, what: str, at: int = 3):  # type: ignore[no-untyped-def]
    yield raise_at(x, what, at)


def batch_raise(batch: list[int], what: str, at: int = 3) -> None:
    for x in batch:
        raise_at(x, what, at)


GATES: dict[str, threading.Event] = defaultdict(threading.Event)


def hold_at(x: int, key: str, at: int) -> int:
    """Item `at` waits for the test's gate (up to 30 s); the others pass at once."""
    if x == at:
        GATES[key].wait(30)
    return x


def hold_at_ctx(x: int, ctx: Any, key: str, at: int) -> int:
    return hold_at(x, key, at)


def gen_hold_at(x: int, key: str, at: int):  # type: ignore[no-untyped-def]
    yield hold_at(x, key, at)


async def ahold_at(x: int, key: str, at: int) -> int:
    """Item `at` waits for the test's gate (polled; up to 30 s); the others pass at once."""
    import asyncio

    if x == at:
        for _ in range(3000):
            if GATES[key].is_set():
                break
            await asyncio.sleep(0.01)
    return x


def produce_then_raise(what: str, n: int = 5):  # type: ignore[no-untyped-def]
    yield from range(n)
    raise_at(3, what, 3)


class RaisingIterator:
    """An iterator (not a generator) whose __next__ raises `what` after n items."""

    def __init__(self, what: str, n: int) -> None:
        self.what, self.n, self.i = what, n, 0

    def __iter__(self) -> RaisingIterator:
        return self

    def __next__(self) -> int:
        if self.i >= self.n:
            raise_at(3, self.what, 3)
            raise StopIteration
        self.i += 1
        return self.i - 1


def produce_iterator(what: str, n: int = 5) -> RaisingIterator:
    return RaisingIterator(what, n)


def produce_emit_then_raise(ctx: Any, what: str, n: int = 5) -> list[int]:
    for i in range(n):
        ctx.emit(i)
    raise_at(3, what, 3)
    return []


def jitter(x: int, key: str, every: int = 37, pause: float = 0.05) -> Any:
    """Mixed behaviour by item: a slow call now and then, filtered, failing, passing."""
    import time

    if x % every == 0:
        GATES[key].wait(pause)
    if x % 11 == 5:
        return None
    if x % 13 == 7:
        raise ValueError(f"bad {x}")
    return x


def jitter_ctx(x: int, ctx: Any, key: str, every: int = 37, pause: float = 0.05) -> Any:
    return jitter(x, key, every, pause)
