"""Stage callables for the disk buffer and item-id tests (`call = "durable_stagefns:name"`)."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

SEEN: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
GATES: dict[str, threading.Event] = defaultdict(threading.Event)
FAILS: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
_lock = threading.Lock()


def record_ctx(x: Any, ctx: Any, key: str) -> Any:
    """Remember (item, ctx.item_id, ctx.attempt) and pass the item on."""
    with _lock:
        SEEN[key].append((x, ctx.item_id, ctx.attempt))
    return x


def fail_first(x: Any, ctx: Any, key: str, times: int = 1) -> Any:
    """Fail the first `times` attempts of every item, remembering each attempt's ctx."""
    with _lock:
        SEEN[key].append((x, ctx.item_id, ctx.attempt))
        FAILS[key][x] += 1
        failing = FAILS[key][x] <= times
    if failing:
        raise ValueError(f"attempt {ctx.attempt} of {x}")
    return x


def hold(x: Any, key: str) -> Any:
    """Wait until the test opens the gate (items stay in flight meanwhile)."""
    GATES[key].wait(30)
    return x


def with_unpicklable(n: int = 3):  # type: ignore[no-untyped-def]
    yield 1
    yield threading.Lock()
    yield from range(2, n + 1)


def record_ctx_to_file(x: Any, ctx: Any, path: str, fail_first: bool = False) -> Any:
    """In any process: append (item, ctx.item_id, ctx.attempt) as a JSON line to `path`; with
    `fail_first`, the first attempt of every item fails (`ctx.attempt` says which one it is)."""
    import json

    with open(path, "a") as f:
        f.write(json.dumps([x, ctx.item_id, ctx.attempt]) + "\n")
    if fail_first and ctx.attempt == 1:
        raise ValueError(f"attempt {ctx.attempt} of {x}")
    return x


def slow_at(x: int, key: str, at: int) -> int | None:
    """Hold item `at` until the test opens the gate; filter every 7th item (x % 7 == 3)."""
    if x == at:
        GATES[key].wait(30)
    return None if x % 7 == 3 else x


def slow_at_ctx(x: int, ctx: Any, key: str, at: int) -> int | None:
    return slow_at(x, key, at)
