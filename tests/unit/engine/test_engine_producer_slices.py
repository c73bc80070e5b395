"""How a producer pulls its items (engine/slices.py): slices grow while items come fast, and a
slice that took long to fill shrinks to what came in SLOW_SLICE_S — one item for a paced producer,
most of the slice for a fast producer whose thread was held up once (preempted, or waiting for the
GIL), which used to start again from one item and climb back through dozens of small slices."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from pipelined.engine import slices
from pipelined.engine.fusion import runs_inline
from pipelined.engine.queues import StageQueue
from pipelined.engine.router import QueueTarget
from pipelined.engine.slices import FLUSH_AT, SLOW_SLICE_S, pull


class _BusyTarget:
    def idle(self) -> bool:
        return False  # the downstream is busy: slices may grow


def _slices(items: Iterator[Any]) -> list[int]:
    """The sizes of the slices `pull` flushes for `items`."""
    stage: Any = SimpleNamespace(
        stopping=False,
        target=_BusyTarget(),  # a queue's (not run in the producer's thread): FLUSH_AT caps
        services=SimpleNamespace(gate=SimpleNamespace(buffer=None, track_ids=False)),
    )
    buf: list[Any] = []
    sizes: list[int] = []

    def flush() -> None:
        sizes.append(len(buf))
        buf.clear()

    pull(items, buf, flush, [0], stage)
    return sizes


def test_a_fast_producer_held_up_once_keeps_most_of_its_slice(monkeypatch: Any) -> None:
    monkeypatch.setattr(slices, "SLOW_SLICE_S", 1.0)  # no slice is slow while they grow (load)
    at = 40 * FLUSH_AT + FLUSH_AT // 2  # by then the slices are full: this is inside one

    def fast_then_held_once() -> Iterator[int]:
        for i in range(at + 4 * FLUSH_AT):
            if i == at:
                monkeypatch.setattr(slices, "SLOW_SLICE_S", SLOW_SLICE_S)
                time.sleep(10 * SLOW_SLICE_S)  # one hold-up in the middle of a fast stream
            yield i

    sizes = _slices(fast_then_held_once())
    held = next(i for i, total in enumerate(_running_totals(sizes)) if total > at)
    assert sizes[held] == FLUSH_AT, sizes
    assert 1 < sizes[held + 1] < FLUSH_AT, sizes  # was 1, then three slices per doubling back up


def test_a_paced_producer_is_pulled_one_item_at_a_time() -> None:
    def paced() -> Iterator[int]:
        for i in range(20):
            time.sleep(0.001)
            yield i

    assert _slices(paced()) == [1] * 20


def _running_totals(sizes: list[int]) -> list[int]:
    totals, total = [], 0
    for size in sizes:
        total += size
        totals.append(total)
    return totals


class _Runner:
    """What runs_inline reads of a thread stage."""

    fusible = True

    def __init__(self, per_item_s: float | None) -> None:
        self.per_item_s = per_item_s

    def fast_now(self) -> bool:
        return self.per_item_s is not None and self.per_item_s <= 20e-6

    def try_inline(self, *args: Any) -> bool:
        return False


def test_larger_slices_only_for_a_stage_that_calls_them_within_its_call_budget() -> None:
    def target(per_item_s: float | None) -> QueueTarget:
        runner = _Runner(per_item_s)
        return QueueTarget(StageQueue("next", 1000, "block"), lambda *_: None, lambda _: runner)

    n = slices.INLINE_FLUSH_AT
    assert runs_inline(target(0.3e-6), n)  # W1's x+1: 4,096 items in ~1 ms
    assert not runs_inline(target(10e-6), n)  # inline, but 4,096 items would take ~40 ms
    assert not runs_inline(target(None), n)  # not measured yet: its own worker calls it
    assert not runs_inline(target(1e-3), n)  # slow: never inline
