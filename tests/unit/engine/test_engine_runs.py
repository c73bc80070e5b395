"""RunTracker and Run state rules; allocation from pipelined.graph.limits; stats when idle."""

from __future__ import annotations

import re
from pathlib import Path

from engine_helpers import build_graph_for, finished_run, pipeline, stage

from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.engine.runs import RunTracker
from pipelined.graph import limits


def test_run_ids_and_history_keep_the_newest() -> None:
    tracker = RunTracker("p", keep=100)
    runs = [tracker.new_run("s", None) for _ in range(150)]
    assert runs[0].id == "r-000001" and runs[-1].id == "r-000150"
    for run in runs:
        run.source_finished()
    tracker.new_run("s", None)
    listed = tracker.list()
    assert len(listed) == 100 and listed[0]["run"] == "r-000151"
    assert listed[1]["run"] == "r-000150" and listed[1]["state"] == "completed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", listed[1]["finished_at"])


def test_failed_wins_over_cancelled_and_a_run_never_runs_again() -> None:
    tracker = RunTracker("p")
    run = tracker.new_run("s", None)
    run.settle(produced=2, enter=2)
    run.source_finished(cancelled=True)
    run.settle(leave=1, finished=1)
    assert run.state == "running"
    run.settle(leave=1, dead=1)
    assert run.state == "failed" and run.ended
    run.settle(enter=1)
    assert run.state == "failed"


def test_wait_returns_false_on_timeout() -> None:
    tracker = RunTracker("p")
    run = tracker.new_run("s", None)
    assert tracker.wait(run.id, 0.01) is False
    run.source_finished()
    assert tracker.wait(run.id, 0.01) is True


def test_allocation_from_limits_and_idle_stats() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}, auto_start=False),
        stage("work", call="inc", threads=8),
        stage("batch", "accumulator", max_size=2),
        stage("sink", "consumer", "collect", args={"key": "alloc"}),
        max_threads=4,
    )
    graph = build_graph_for(spec)
    allocation = limits.allocate(spec, graph, None, None)
    rt = PipelineRuntime(spec, graph, allocation, PipelineBook("p", None))
    rt.start()
    try:
        rows = {r["name"]: r for r in rt.stage_rows()}
        assert rows["work"]["requested_threads"] == 8
        assert rows["work"]["threads"] == allocation.stages["work"].threads < 8
        assert rows["batch"]["threads"] == 0
        assert rt.live_workers()[0] == sum(r["threads"] for r in rows.values())
        stats = rt.stats()
        assert stats["bottleneck"] is None and stats["state"] == "running"
        assert stats["stages"]["work"]["threads"] == rows["work"]["threads"]
        assert finished_run(rt, rt.trigger("src"))["items"]["finished"] == 2
    finally:
        rt.drain(5)
    assert rt.stats()["state"] == "drained"


def test_run_numbering_resumes_after_the_dead_letters_of_a_previous_life(tmp_path: Path) -> None:
    book = PipelineBook("p", tmp_path)
    book.dead_letters.add("r-000007", "s", 1, "ValueError: x", 1)
    book.dead_letters.add("r-000003", "s", 1, "ValueError: y", 2)
    book.close()
    again = PipelineBook("p", tmp_path)  # a daemon restart reads the letters back
    assert len(again.dead_letters.list()) == 2
    assert again.runs.new_run("src", None).id == "r-000008"
    assert PipelineBook("q", tmp_path).runs.new_run("src", None).id == "r-000001"
