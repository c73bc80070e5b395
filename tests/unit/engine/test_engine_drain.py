"""Drain: producers stopped, in-flight finished, accumulators flushed, deadline dead letters."""

from __future__ import annotations

from typing import Any

import engine_stagefns as fns
import pytest
from engine_helpers import finished_run, pipeline, running, stage, wait_for

from pipelined.errors import Conflict


def _accounted(run: dict) -> bool:
    items = run["items"]
    return items["produced"] == items["finished"] + items["filtered"] + items["dead_lettered"]


def test_drain_of_an_infinite_producer_consumes_everything_produced() -> None:
    spec = pipeline(
        stage("src", "producer", "forever"),
        stage("inc", call="inc"),
        stage("sink", "consumer", "collect", args={"key": "infinite"}),
    )
    with running(spec) as rt:
        assert wait_for(lambda: len(fns.COLLECTED["infinite"]) > 1000)
        rt.drain(5)
        assert rt.state == "drained"
        [run] = rt.book.runs.list()
        assert run["state"] == "cancelled" and run["items"]["in_flight"] == 0
        assert run["items"]["produced"] == len(fns.COLLECTED["infinite"]) == run["items"]["finished"]
        assert _accounted(run)
        assert rt.live_workers() == (0, 0)


def test_ctx_stopping_ends_a_producer_on_drain() -> None:
    spec = pipeline(
        stage("src", "producer", "until_stopping"),
        stage("sink", "consumer", "collect", args={"key": "stopping"}),
    )
    with running(spec) as rt:
        assert wait_for(lambda: len(fns.COLLECTED["stopping"]) > 5)
        rt.drain(5)
        [run] = rt.book.runs.list()
        assert run["state"] == "cancelled"
        assert run["items"]["produced"] == len(fns.COLLECTED["stopping"])


def test_triggers_are_refused_while_draining_and_after() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", auto_start=False),
        stage("gate", "consumer", "wait_gate", args={"key": "drain-conflict"}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        assert wait_for(lambda: rt.book.runs.get(run_id)["items"]["produced"] == 10)
        rt.begin_drain()
        assert rt.state == "draining"
        with pytest.raises(Conflict, match="draining"):
            rt.trigger("src")
        fns.EVENTS["drain-conflict"].set()
        assert rt.wait_drained(5)
        assert rt.state == "drained"
        with pytest.raises(Conflict, match="drained"):
            rt.trigger("src")
        assert rt.book.runs.get(run_id)["state"] == "completed"


def test_queued_runs_that_never_started_are_cancelled() -> None:
    spec = pipeline(
        stage("src", "producer", "gated", args={"key": "queued-cancel"}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": "queued-cancel-out"}),
    )
    with running(spec) as rt:
        first, second = rt.trigger("src"), rt.trigger("src")
        rt.begin_drain()
        fns.EVENTS["queued-cancel"].set()
        assert rt.wait_drained(5)
        assert rt.book.runs.get(second)["state"] == "cancelled"
        assert rt.book.runs.get(second)["items"]["produced"] == 0
        assert rt.book.runs.get(first)["state"] in ("completed", "cancelled")


def test_drain_deadline_dead_letters_leftovers_as_shutdown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 20}, auto_start=False),
        stage("stuck", "consumer", "wait_gate", args={"key": "deadline"}, queue_size=100),
    )
    with running(spec, tmp_path, drain_timeout=0.3) as rt:
        run_id = rt.trigger("src")
        assert wait_for(lambda: rt.stats()["stages"]["stuck"]["busy"] == 1)
        rt.drain(0.3)
        assert rt.state == "drained"
        run = rt.book.runs.get(run_id)
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 20
        assert _accounted(run)
        letters = rt.book.dead_letters.list(100)
        assert len(letters) == 20 and {d["error"] for d in letters} == {"shutdown"}
        fns.EVENTS["deadline"].set()  # the late result is discarded
        assert wait_for(lambda: rt.stats()["stages"]["stuck"]["busy"] == 0)
        assert rt.book.runs.get(run_id)["items"]["finished"] == 0


def test_drain_deadline_covers_items_waiting_for_a_retry() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 2}, auto_start=False),
        stage("bad", "consumer", "always_fail", retry_backoff=10.0),
    )
    with running(spec, drain_timeout=0.2) as rt:
        run_id = rt.trigger("src")
        assert wait_for(lambda: rt.retry.pending() == 2)
        rt.drain(0.2)
        run = rt.book.runs.get(run_id)
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 2
        assert [d["attempts"] for d in rt.book.dead_letters.list()] == [1, 1]


def test_close_is_called_on_drain_and_a_new_runtime_continues_run_ids() -> None:
    from engine_helpers import build_graph_for

    from pipelined.engine import PipelineBook, PipelineRuntime

    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}),
        stage("scale", call="Scaler"),
        stage("sink", "consumer", "collect", args={"key": "restart"}),
    )
    book = PipelineBook("p", None)
    fns.Scaler.closes = 0
    for expected in ("r-000001", "r-000002"):
        rt = PipelineRuntime(spec, build_graph_for(spec), None, book)
        rt.start()
        assert finished_run(rt, expected)["state"] == "completed"
        rt.drain(5)
    assert fns.Scaler.closes == 2
    assert len(fns.COLLECTED["restart"]) == 6
    assert rt.stats()["stages"]["scale"]["items_in"] == 6  # counters survive versions


def test_a_put_blocked_at_the_drain_deadline_dead_letters_only_what_did_not_get_in() -> None:
    import threading

    from pipelined.engine.queues import StageQueue
    from pipelined.engine.router import QueueTarget
    from pipelined.engine.runs import Run

    queue = StageQueue("s", 2, "block")
    dropped: list[tuple[str, list[Any], str]] = []
    target = QueueTarget(queue, lambda stage, chunks, why: dropped.extend((stage, c.items, why) for c in chunks))
    run = Run("r-000001", "p", "src", None)
    sender = threading.Thread(target=target.send, args=(run, [1, 2, 3, 4, 5]))
    sender.start()
    assert wait_for(lambda: queue.depth == 2)  # 1 and 2 got in; 3, 4, 5 wait for room
    taken = queue.abandon()  # the drain deadline: the drain dead-letters what is queued
    sender.join(5)
    assert [c.items for c in taken] == [[1, 2]]
    # regression: the whole chunk was dead-lettered again (twice for 1 and 2; in_flight < 0)
    assert dropped == [("s", [3, 4, 5], "shutdown")]
    assert run.in_flight == 5  # all five entered: the 2 + 3 dead letters take each out once
