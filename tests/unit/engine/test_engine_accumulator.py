"""Accumulators: max_size, max_wait, batches per run, flush when a run can send no more."""

from __future__ import annotations

import engine_stagefns as fns
from engine_helpers import finished_run, pipeline, running, stage, wait_for


def test_full_batches_then_partial_flush_when_the_run_is_done() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 25}, auto_start=False),
        stage("batch", "accumulator", max_size=10),
        stage("sink", "consumer", "collect", args={"key": "acc-sizes"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        batches = fns.COLLECTED["acc-sizes"]
        assert sorted(len(b) for b in batches) == [5, 10, 10]
        assert sorted(x for b in batches for x in b) == list(range(25))
        assert run["items"]["finished"] == 3  # a batch counts once
        row = rt.stats()["stages"]["batch"]
        assert row["items_in"] == 25 and row["items_out"] == 3


def test_batches_never_mix_runs() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", auto_start=False),
        stage("batch", "accumulator", max_size=4),
        stage("sink", "consumer", "collect", args={"key": "acc-runs"}),
    )
    with running(spec) as rt:
        a = rt.trigger("batch", items=["a1", "a2", "a3"])
        b = rt.trigger("batch", items=["b1", "b2", "b3", "b4", "b5"])
        assert finished_run(rt, a)["state"] == "completed"
        assert finished_run(rt, b)["state"] == "completed"
        for batch in fns.COLLECTED["acc-runs"]:
            assert len({item[0] for item in batch}) == 1, batch
        assert sorted(len(x) for x in fns.COLLECTED["acc-runs"]) == [1, 3, 4]


def test_partial_batch_waits_for_a_slow_upstream_branch() -> None:
    # fast and slow both feed the accumulator: it must not flush the run's partial batch
    # while the slow branch still holds items of that run
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}, auto_start=False,
              to=("fast", "slow"), fanout="broadcast"),
        stage("fast", call="inc", to=("batch",)),
        stage("slow", call="slow", args={"delay": 0.05}, to=("batch",)),
        stage("batch", "accumulator", max_size=100),
        stage("sink", "consumer", "collect", args={"key": "acc-fanin"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert [len(b) for b in fns.COLLECTED["acc-fanin"]] == [6]


def test_max_wait_emits_a_partial_batch_while_the_run_goes_on() -> None:
    spec = pipeline(
        stage("src", "producer", "gated", args={"key": "acc-wait", "n": 1}, auto_start=False),
        stage("batch", "accumulator", max_size=100, max_wait=0.05),
        stage("sink", "consumer", "collect", args={"key": "acc-wait-out"}),
    )
    with running(spec) as rt:
        rt.trigger("batch", items=[1, 2])
        assert wait_for(lambda: fns.COLLECTED["acc-wait-out"] == [[1, 2]], 5)


def test_chained_accumulators_flush_in_order() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 7}, auto_start=False),
        stage("small", "accumulator", max_size=3),
        stage("big", "accumulator", max_size=10),
        stage("sink", "consumer", "collect", args={"key": "acc-chain"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        [outer] = fns.COLLECTED["acc-chain"]
        assert sorted(len(b) for b in outer) == [1, 3, 3]


def test_drain_flushes_partial_batches() -> None:
    spec = pipeline(
        stage("src", "producer", "forever", args={"pause": 0.001}),
        stage("batch", "accumulator", max_size=1_000_000),
        stage("sink", "consumer", "collect", args={"key": "acc-drain"}),
    )
    with running(spec) as rt:
        assert wait_for(lambda: rt.stats()["stages"]["batch"]["items_in"] >= 10)
        rt.drain(5)
        [run] = rt.book.runs.list()
        [batch] = fns.COLLECTED["acc-drain"]
        assert len(batch) == run["items"]["produced"]
        assert run["state"] == "cancelled"
