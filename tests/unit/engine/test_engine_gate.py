"""Token bucket, slots and StageGate (engine/gate.py): grants, give-backs, cancelled waits, throttled_s."""

from __future__ import annotations

import threading
import time

from engine_helpers import wait_for

from pipelined.config.rates import parse_rate
from pipelined.engine.counters import StageCounters
from pipelined.engine.gate import Slots, StageGate, TokenBucket
from pipelined.engine.queues import Chunk, StageQueue
from pipelined.engine.runs import Run

NEVER = lambda: False  # noqa: E731


def test_the_bucket_starts_full_grants_what_it_holds_and_takes_tokens_back() -> None:
    counters = StageCounters()
    bucket = TokenBucket(parse_rate("5/h"), counters)  # no refill worth a token during the test
    assert bucket.acquire(3, NEVER) == 3
    assert bucket.acquire(10, NEVER) == 2  # what is left, not what was asked
    bucket.give_back(2)
    assert bucket.acquire(10, NEVER) == 2
    assert counters.throttled_s == 0.0


def test_give_back_never_overfills_the_bucket() -> None:
    bucket = TokenBucket(parse_rate("3/h"), StageCounters())
    bucket.give_back(100)
    assert bucket.acquire(100, NEVER) == 3


def test_a_wait_for_a_token_counts_as_throttled_and_ends_when_cancelled() -> None:
    counters = StageCounters()
    bucket = TokenBucket(parse_rate("1/h"), counters)
    assert bucket.acquire(1, NEVER) == 1
    stop = threading.Event()
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(bucket.acquire(1, stop.is_set)))
    waiter.start()
    assert wait_for(lambda: counters.throttled_s > 0.15)  # it waits, and the wait is counted
    stop.set()
    bucket.wake()
    waiter.join(5)
    assert result == [0] and not waiter.is_alive()


def test_the_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(parse_rate("50/s"), StageCounters())
    assert bucket.acquire(50, NEVER) == 50
    began = time.monotonic()
    got = 0
    while got < 5:
        got += bucket.acquire(5 - got, NEVER)
    # five tokens at 50/s cannot come sooner than 0.1 s after the burst (lower bound only)
    assert time.monotonic() - began >= 0.1 - 0.02


def test_slots_bound_holders_and_cancelled_waits_return_false() -> None:
    slots = Slots(2)
    assert slots.acquire(NEVER) and slots.acquire(NEVER)
    assert slots.acquire(lambda: True) is False
    slots.release()
    assert slots.acquire(NEVER)


def test_gate_take_is_bounded_by_tokens_and_unused_tokens_go_back() -> None:
    counters = StageCounters()
    bucket = TokenBucket(parse_rate("4/h"), counters)
    gate = StageGate(bucket, None)
    queue = StageQueue("s", 100, "block")
    queue.put(Chunk(Run("r", "p", "s", None), list(range(10))))
    first = gate.take(queue, 1024)
    assert first is not None and first.items == [0, 1, 2, 3]  # the burst, not the 10 queued
    queue2 = StageQueue("t", 100, "block")
    bucket2 = TokenBucket(parse_rate("4/h"), counters)
    queue2.put(Chunk(Run("r", "p", "t", None), [1]))
    one = StageGate(bucket2, None).take(queue2, 1024)
    assert one is not None and one.items == [1]
    assert bucket2.acquire(10, NEVER) == 3  # the three tokens it did not use went back


def test_gate_take_returns_none_on_a_closed_queue_and_when_woken() -> None:
    queue = StageQueue("s", 100, "block")
    gate = StageGate(TokenBucket(parse_rate("1/h"), StageCounters()), Slots(1))
    queue.put(Chunk(Run("r", "p", "s", None), [1, 2]))
    chunk = gate.take(queue, 10)
    assert chunk is not None and chunk.items == [1]
    gate.done()
    result: list[object] = []
    taker = threading.Thread(target=lambda: result.append(gate.take(queue, 10)))
    taker.start()  # waits for a token (the next comes in an hour)
    assert wait_for(lambda: gate.bucket is not None and gate.bucket.counters.throttled_s > 0)
    gate.wake()  # the drain deadline
    taker.join(5)
    assert result == [None] and not taker.is_alive()
    closed = StageQueue("c", 10, "block")
    closed.close()
    assert StageGate(None, Slots(1)).take(closed, 10) is None


def test_a_concurrency_gate_holds_a_slot_per_take() -> None:
    queue = StageQueue("s", 100, "block")
    queue.put(Chunk(Run("r", "p", "s", None), [1, 2, 3]))
    gate = StageGate(None, Slots(1), one_item_per_slot=True)
    first = gate.take(queue, 10)
    assert first is not None and first.items == [1]  # fork_per_item: one item per slot
    result: list[object] = []
    taker = threading.Thread(target=lambda: result.append(gate.take(queue, 10)))
    taker.start()
    taker.join(0.3)
    assert taker.is_alive() and result == []  # no free slot
    gate.done()
    taker.join(5)
    assert len(result) == 1 and result[0].items == [2]  # type: ignore[attr-defined]
