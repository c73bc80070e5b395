"""A `processes = N` stage runs through pipelined.workers; retries stay in the engine."""

from __future__ import annotations

import engine_stagefns as fns
from engine_helpers import finished_run, pipeline, running, stage


def test_process_stage_items_and_failures() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 50}, auto_start=False),
        stage("work", call="evens", processes=2, start_method="fork"),
        stage("bad", call="always_fail", processes=1, start_method="fork", max_retries=1, retry_backoff=0.01),
        stage("sink", "consumer", "collect", args={"key": "procs"}),
    )
    with running(spec) as rt:
        assert rt.live_workers()[1] == 3
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed"
        assert run["items"]["filtered"] == 25 and run["items"]["dead_lettered"] == 25
        row = rt.stats()["stages"]["bad"]
        assert row["processes"] == 1 and row["threads"] == 0
        assert row["items_failed"] == 50 and row["items_retried"] == 25
        letter = rt.book.dead_letters.list(1)[0]
        assert letter["error"].startswith("ValueError: bad item") and letter["attempts"] == 2
    assert rt.live_workers() == (0, 0)
    assert fns.COLLECTED["procs"] == []


def test_producer_in_a_worker_process() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 30}, auto_start=False, processes=1, start_method="fork"),
        stage("sink", "consumer", "collect", args={"key": "proc-producer"}),
    )
    with running(spec) as rt:
        assert rt.live_workers() == (1, 1)  # the sink's thread, the producer's process
        run = finished_run(rt, rt.trigger("src", args={"start": 100}))
        assert run["state"] == "completed" and run["items"]["finished"] == 30
        assert sorted(fns.COLLECTED["proc-producer"]) == list(range(100, 130))
        failed = finished_run(rt, rt.trigger("src", args={"n": "not a number"}))
        assert failed["state"] == "failed" and "TypeError" in failed["error"]
    assert rt.live_workers() == (0, 0)
