"""Shared state read and written by several threads (issue 15, "found by reading"): counters read
while a worker retires its cell, dead-letter ids taken by concurrent writers, the weighted
router's position. Each test runs real threads with a tiny switch interval (so the interpreter
switches threads often) for a bounded time, and checks an invariant that the race broke.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelined.engine.counters import StageCounters
from pipelined.engine.deadletters import DeadLetterStore
from pipelined.engine.router import Router, Target
from pipelined.engine.runs import Run


@pytest.fixture(autouse=True)
def often_switching() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_counters_read_while_a_cell_retires_count_it_once() -> None:
    counters = StageCounters()
    stop = threading.Event()
    retired = [0]

    def churn() -> None:
        while not stop.is_set():
            cell = counters.cell()
            cell.items_in = 1
            counters.retire(cell)
            retired[0] += 1

    worker = threading.Thread(target=churn)
    worker.start()
    over = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline and not over:
            seen = counters.totals()["items_in"]
            if seen > retired[0] + 1:  # at most one cell is live at a time
                over += 1
    finally:
        stop.set()
        worker.join()
    assert over == 0
    assert counters.totals()["items_in"] == retired[0]


def test_dead_letter_ids_follow_the_order_letters_are_kept_in(tmp_path: Path) -> None:
    store = DeadLetterStore("p", tmp_path)

    def write(n: int) -> None:
        for i in range(200):
            store.add_many(f"r-{n:06d}", "s", 1, "ValueError: bad", [{"i": i, "pad": "x" * 200}])

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    ids = [letter["id"] for letter in store.list(1000)]
    assert len(ids) == len(set(ids)) == 800
    numbers = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert numbers == sorted(numbers, reverse=True)  # newest first, numbered in that order
    store.close()


class Counting(Target):
    def __init__(self) -> None:
        self.items = 0

    def send(self, run: Run, items: list[Any], lineage: Any = None, ids: Any = None) -> int:
        self.items += len(items)
        return 0

    def plan(self, items: list[Any], plan: Any, ids: Any = None) -> None:  # never planned: nothing rejects here
        raise AssertionError("not reached")


@pytest.mark.parametrize("mode", ["weighted", "round_robin"])
def test_a_router_shared_by_sender_threads_splits_evenly(mode: str) -> None:
    targets = [Counting(), Counting()]
    router = Router(mode, targets, [1, 1])
    run = Run("r-000001", "p", "s", None)

    def send() -> None:
        for i in range(20_000):
            router.send(run, [i, i, i])

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert Counter(t.items for t in targets) == Counter({120_000: 2})  # 4 x 20,000 x 3 items, alternating
