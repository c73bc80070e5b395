"""StageQueue with run priorities: a plain deque until a priority arrives, lanes after, back after."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from pipelined.engine.lanes import PriorityLanes
from pipelined.engine.queues import Chunk, StageQueue
from pipelined.engine.runs import Run


def run(name: str, priority: int = 0) -> Run:
    return Run(name, "p", "s", None, priority)


def taken(queue: StageQueue, n: int = 1024) -> list[object]:
    out: list[object] = []
    while (chunk := queue.take_nowait(n)) is not None:
        out.extend(chunk.items)
    return out


def test_priority_zero_never_leaves_the_plain_deque() -> None:
    queue = StageQueue("s", 100, "block")
    a, b = run("a"), run("b")
    for i in range(6):
        queue.put(Chunk(a if i % 2 else b, [i]))
    assert not queue.prioritized and isinstance(queue._chunks, deque)
    assert taken(queue, 1) == [0, 1, 2, 3, 4, 5]


def test_higher_priorities_first_fifo_within_then_back_to_the_deque() -> None:
    queue = StageQueue("s", 100, "block")
    low, mid, high, neg = run("low"), run("mid", 3), run("high", 9), run("neg", -2)
    queue.put(Chunk(low, ["l1", "l2"]))
    queue.put(Chunk(neg, ["n1"]))
    queue.put(Chunk(mid, ["m1"]))
    queue.put(Chunk(high, ["h1"]))
    queue.put(Chunk(mid, ["m2"]))
    queue.put(Chunk(low, ["l3"]))
    queue.put(Chunk(high, ["h2"]))
    assert queue.prioritized and isinstance(queue._chunks, PriorityLanes)
    assert queue.depth == 8
    assert taken(queue) == ["h1", "h2", "m1", "m2", "l1", "l2", "l3", "n1"]
    assert queue.depth == 0
    assert not queue.prioritized and isinstance(queue._chunks, deque)


def test_a_take_merges_chunks_of_one_run_within_its_lane_only() -> None:
    queue = StageQueue("s", 100, "block")
    high, low = run("high", 5), run("low")
    queue.put(Chunk(low, [1]))
    queue.put(Chunk(high, [2]))
    queue.put(Chunk(high, [3]))
    first = queue.take_nowait(10)
    assert first is not None and first.run is high and first.items == [2, 3]
    second = queue.take_nowait(10)
    assert second is not None and second.run is low and second.items == [1]


def test_an_item_that_waited_max_wait_is_served_next() -> None:
    queue = StageQueue("s", 100, "block", max_wait_s=0.5)
    low, high = run("low"), run("high", 5)
    old = Chunk(low, ["old"])
    queue.put(old)
    for i in range(3):
        queue.put(Chunk(high, [f"h{i}"]))
    first = queue.take_nowait(1)
    assert first is not None and first.items == ["h0"]  # the low item has not waited 0.5 s yet
    old.enqueued_at = time.perf_counter() - 0.6  # as if queued 0.6 s ago
    second = queue.take_nowait(1)
    assert second is not None and second.items == ["old"]
    assert taken(queue) == ["h1", "h2"]


def test_the_oldest_overdue_chunk_goes_first() -> None:
    queue = StageQueue("s", 100, "block", max_wait_s=1.0)
    a, b, top = run("a", -5), run("b", 0), run("top", 7)
    chunk_a, chunk_b = Chunk(a, ["a"]), Chunk(b, ["b"])
    queue.put(chunk_b)
    queue.put(chunk_a)
    queue.put(Chunk(top, ["t"]))
    now = time.perf_counter()
    chunk_b.enqueued_at, chunk_a.enqueued_at = now - 2.0, now - 3.0
    assert taken(queue, 1) == ["a", "b", "t"]


def test_drop_oldest_drops_the_lowest_priority_first() -> None:
    queue = StageQueue("s", 4, "drop_oldest")
    low, high = run("low"), run("high", 2)
    assert queue.put(Chunk(low, [1, 2])) == []
    assert queue.put(Chunk(high, [3, 4])) == []
    dropped = queue.put(Chunk(high, [5, 6, 7]))
    assert [(c.run.id, c.items) for c in dropped] == [("low", [1, 2]), ("high", [3])]
    assert queue.depth == 4
    assert taken(queue) == [4, 5, 6, 7]


def test_abandon_returns_every_chunk_and_the_queue_is_plain_again() -> None:
    queue = StageQueue("s", 100, "block")
    queue.put(Chunk(run("a"), [1]))
    queue.put(Chunk(run("b", 1), [2]))
    left = queue.abandon()
    assert sorted(item for chunk in left for item in chunk.items) == [1, 2]
    assert not queue.prioritized and queue.depth == 0


def test_a_priority_set_on_the_run_later_is_seen_by_the_next_queue() -> None:
    """The links code sets `run.priority` on the linked run it starts: chunks read it when queued."""
    queue = StageQueue("s", 100, "block")
    linked = run("linked")
    linked.priority = 4
    queue.put(Chunk(run("backlog"), [1, 2, 3]))
    queue.put(Chunk(linked, ["x"]))
    assert taken(queue, 1)[0] == "x"
    assert run("r", 6).to_dict()["priority"] == 6


def test_a_fast_stage_called_in_its_senders_thread_still_serves_priorities_first(tmp_path: Path) -> None:
    """Execution affinity: a sender that calls a fast one-thread stage itself queues a chunk with a
    priority and calls what is queued in the queue's order (not its own chunk last)."""
    from engine_helpers import build_graph_for, pipeline, stage
    from engine_stagefns import COLLECTED

    from pipelined.engine import PipelineBook, PipelineRuntime
    from pipelined.engine.assembly import build
    from pipelined.engine.lateoutputs import WATCHER

    key = "inline-priority"
    spec = pipeline(stage("fast", "consumer", "collect", args={"key": key}))
    rt = PipelineRuntime(spec, build_graph_for(spec), None, PipelineBook("p", tmp_path))
    build(rt)  # the stage, not its worker thread: only the sender calls it here
    fast = rt.stages["fast"]
    invoker = fast.make_invoker()
    slot = fast._new_slot()  # what its worker would hold (late outputs' watcher)
    fast._inline = (invoker, invoker.fast_function(), fast.counters.cell(), slot)
    fast.per_item_s = 1e-6  # as fast as execution affinity needs
    queue = rt.queues["fast"]
    for i in range(3):
        queue.put(Chunk(run(f"low{i}"), [f"L{i}"]))
    assert fast.try_inline(run("plain"), ["P"])  # priority 0: the queue first, then its own chunk
    assert COLLECTED[key] == ["L0", "L1", "L2", "P"]
    for i in range(3):
        queue.put(Chunk(run(f"low{i}"), [f"M{i}"]))
    assert fast.try_inline(run("urgent", 5), ["H"])
    assert COLLECTED[key][4:] == ["H", "M0", "M1", "M2"]
    assert not queue.prioritized and queue.depth == 0
    WATCHER.unregister(slot)
