"""Stage callables for the fresh-eyes review tests: values that behave like real user data
(numpy-like `==`) and callables raising what user code may raise, or stuck on one item."""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from typing import Any

GOT: dict[str, list[Any]] = defaultdict(list)
GATES: dict[str, threading.Event] = defaultdict(threading.Event)
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


def keep(item: Any, key: str) -> None:
    with _lock:
        GOT[key].append(item)


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
