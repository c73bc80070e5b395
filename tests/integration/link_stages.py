"""Stage callables for the link tests (tests/integration/test_links.py), copied into each
daemon's modules dir as `link_stages`. Items are plain ints; every consumer appends the item it
took to `<out_dir>/<name>.txt`, so a test can count and de-duplicate what arrived where."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()


def numbers(n: int = 100, delay: float = 0.0) -> Iterator[int]:
    for i in range(n):
        yield i
        if delay:
            time.sleep(delay)


def until_file(stop: str, delay: float = 0.002) -> Iterator[int]:
    """0, 1, 2, ... until the file `stop` exists."""
    i = 0
    while not os.path.exists(stop):
        yield i
        i += 1
        time.sleep(delay)


def same(item: Any) -> Any:
    return item


def slow(item: Any, seconds: float = 0.01) -> Any:
    time.sleep(seconds)
    return item


def send_over(item: Any, ctx: Any) -> None:
    """Sends every item to pipeline b's stage `in` with ctx.emit_to (and nothing downstream)."""
    ctx.emit_to("b/in", item)


def record(item: Any, out_dir: str, name: str) -> None:
    lines = item if isinstance(item, list) else [item]
    with _lock, open(os.path.join(out_dir, f"{name}.txt"), "a") as fh:
        fh.write("".join(f"{line}\n" for line in lines))


def read(out_dir: str, name: str) -> list[str]:
    try:
        with open(os.path.join(out_dir, f"{name}.txt")) as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []
