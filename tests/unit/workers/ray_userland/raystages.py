"""User stage code for the Ray tests: shipped to the actors through runtime_env py_modules."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("raystages")


def double(item: int) -> int:
    return item * 2


def plain(item: Any) -> Any:
    """`universal` without ctx: the actor's fast path (a plain function, compact rows)."""
    return universal(item, None)


def universal(item: Any, ctx: Any) -> Any:
    """One callable for many checks (each stage start costs a new actor process): `(op, value)`."""
    op, value = item
    if op == "double":
        return value * 2
    if op == "where":
        return __file__, os.getpid()  # the file this module was imported from, in the actor
    if op == "raise":
        raise ValueError(f"bad item {value!r}")
    if op == "exit":
        raise SystemExit(value)
    if op == "lambda":
        return lambda: value  # does not pickle: this item fails alone
    if op == "filter":
        return None
    if op == "fan":  # ctx.emit, ctx.emit_to, a log line and the return value
        ctx.emit(("emitted", value))
        ctx.emit_to("audit", ("audited", value))
        ctx.logger.warning("fan saw %s", value)
        return ("returned", value)
    if op == "sleep":
        time.sleep(value)
        return value
    if op == "interrupt":
        raise KeyboardInterrupt(value)
    if op == "stopiteration":
        raise StopIteration(value)
    if op == "unpicklable_error":
        raise Unpicklable(value)
    if op == "big":
        return b"x" * value
    raise LookupError(op)


class Unpicklable(Exception):
    """An exception that does not survive pickling (a required argument, a lock)."""

    def __init__(self, value: Any) -> None:
        super().__init__(f"cannot travel {value!r}")
        self.lock = threading.Lock()


class Scorer:
    """Instantiated once per actor with its TOML args; setup()/close() recorded in a file."""

    def __init__(self, record: str, factor: int = 1) -> None:
        self.record = record
        self.factor = factor
        self.ready = False

    def setup(self) -> None:
        self.ready = True
        with open(self.record, "a") as out:
            out.write(f"setup {os.getpid()}\n")

    def __call__(self, item: int) -> tuple[int, int]:
        assert self.ready
        return item * self.factor, os.getpid()

    def close(self) -> None:
        with open(self.record, "a") as out:
            out.write(f"close {os.getpid()}\n")


class FailingSetup:
    def setup(self) -> None:
        raise RuntimeError("no model file")

    def __call__(self, item: Any) -> Any:
        return item


def refuse_to_load() -> Any:
    raise ValueError("this item does not unpickle here")


class LoadsNowhere:
    """Pickles anywhere, unpickles nowhere: the actor must take its batch item by item."""

    def __reduce__(self) -> tuple[Any, ...]:
        return refuse_to_load, ()
