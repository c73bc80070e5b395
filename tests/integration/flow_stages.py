"""Stage callables for the daemon integration tests, copied into each daemon's modules dir.

Every item a producer yields and every item the sink consumes is appended to a file in `out_dir`,
so a test can prove after the daemon exited that produced == consumed + dead-lettered.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()


def _append(out_dir: str, name: str, line: str) -> None:
    with _lock, open(os.path.join(out_dir, name), "a") as fh:
        fh.write(line + "\n")


def numbers(out_dir: str, count: int = 1_000_000_000, delay: float = 0.0) -> Iterator[str]:
    """Items `<tag>-<i>`, each recorded in produced.txt just before it is yielded."""
    tag = uuid.uuid4().hex[:8]
    for i in range(count):
        item = f"{tag}-{i}"
        _append(out_dir, "produced.txt", item)
        yield item
        if delay:
            time.sleep(delay)


def slow(item: Any, seconds: float = 0.0) -> Any:
    if seconds:
        time.sleep(seconds)
    return item


def record(item: Any, out_dir: str) -> None:
    _append(out_dir, "consumed.txt", str(item))


def tag_with(item: Any, tag: str = "") -> Any:
    return f"{tag}:{item}"


class FailingSetup:
    """A processor class whose setup() raises: its stage (and pipeline version) cannot start."""

    def setup(self) -> None:
        raise RuntimeError("setup failed: no database")

    def __call__(self, item: Any) -> Any:
        return item


def read_lines(out_dir: str, name: str) -> list[str]:
    try:
        with open(os.path.join(out_dir, name)) as fh:
            return fh.read().split()
    except FileNotFoundError:
        return []
