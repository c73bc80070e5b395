"""Trigger validation, queue policies (block / drop_oldest / reject), hooks around runs."""

from __future__ import annotations

import engine_stagefns as fns
import pytest
from engine_helpers import finished_run, hooks, pipeline, running, stage, wait_for

from pipelined.engine import triggers as triggers_module
from pipelined.errors import BadRequest, NotFound, QueueFull, Unavailable


def _spec(**sink_kw: object):  # type: ignore[no-untyped-def]
    return pipeline(
        stage("src", "producer", "count_to", auto_start=False),
        stage("sink", "consumer", "wait_gate", **sink_kw),
    )


def test_trigger_args_are_bound_before_the_run_starts() -> None:
    with running(_spec(args={"key": "bind"})) as rt:
        with pytest.raises(BadRequest, match="stage 'src'.*does not accept argument 'bogus'"):
            rt.trigger("src", args={"bogus": 1})
        with pytest.raises(BadRequest, match="producer: give 'args'"):
            rt.trigger("src", items=[1])
        with pytest.raises(BadRequest, match="give 'items'"):
            rt.trigger("sink", args={"n": 1})
        with pytest.raises(BadRequest, match="non-empty list"):
            rt.trigger("sink", items=[])
        with pytest.raises(NotFound, match="no stage 'nope'"):
            rt.trigger("nope")
        assert rt.book.runs.list() == []
        fns.EVENTS["bind"].set()
        run = finished_run(rt, rt.trigger("src", args={"n": 2}))
        assert run["items"]["produced"] == 2


def test_reject_refuses_injected_items_all_or_nothing() -> None:
    with running(_spec(args={"key": "reject"}, queue_size=3, on_full="reject")) as rt:
        first = rt.trigger("sink", items=[1])
        assert wait_for(lambda: rt.stats()["stages"]["sink"]["busy"] == 1)
        rt.trigger("sink", items=[2, 3])
        with pytest.raises(QueueFull, match="stage 'sink'.*no room for 2 items"):
            rt.trigger("sink", items=[4, 5])
        assert rt.stats()["stages"]["sink"]["queue_depth"] == 2
        assert len(rt.book.runs.list()) == 2
        fns.EVENTS["reject"].set()
        assert finished_run(rt, first)["state"] == "completed"


def test_block_gives_unavailable_when_the_queue_stays_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triggers_module, "INJECT_TIMEOUT", 0.1)
    with running(_spec(args={"key": "block"}, queue_size=1)) as rt:
        rt.trigger("sink", items=[1])
        assert wait_for(lambda: rt.stats()["stages"]["sink"]["busy"] == 1)
        rt.trigger("sink", items=[2])
        with pytest.raises(Unavailable, match="within 0.1 s"):
            rt.trigger("sink", items=[3])
        fns.EVENTS["block"].set()


def test_drop_oldest_dead_letters_what_it_drops() -> None:
    with running(_spec(args={"key": "drop"}, queue_size=2, on_full="drop_oldest")) as rt:
        first = rt.trigger("sink", items=[0])
        assert wait_for(lambda: rt.stats()["stages"]["sink"]["busy"] == 1)
        second = rt.trigger("sink", items=[1, 2, 3, 4])
        row = rt.stats()["stages"]["sink"]
        assert row["items_dropped"] == 2 and row["items_dead_lettered"] == 2 and row["queue_depth"] == 2
        letters = rt.book.dead_letters.list()
        assert {d["item"] for d in letters} == {1, 2} and {d["error"] for d in letters} == {"dropped"}
        fns.EVENTS["drop"].set()
        run = finished_run(rt, second)
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 2 and run["items"]["finished"] == 2
        assert finished_run(rt, first)["state"] == "completed"


def test_reject_between_stages_fails_the_attempt_which_is_retried() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 30}, auto_start=False),
        stage("pass", call="inc", retry_backoff=0.01, max_retries=50),
        stage("sink", "consumer", "collect_slowly", args={"key": "reject-retry", "delay": 0.002},
              queue_size=2, on_full="reject"),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert sorted(fns.COLLECTED["reject-retry"]) == list(range(1, 31))
        assert rt.stats()["stages"]["pass"]["items_failed"] > 0


def test_before_and_after_run_hooks_see_the_run() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 2}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": "hooks"}),
        hooks=hooks(before_run="before_run_hook", after_run="after_run_hook"),
    )
    fns.CALLS["before_run"].clear()
    fns.CALLS["after_run"].clear()
    with running(spec) as rt:
        run_id = rt.trigger("src")
        finished_run(rt, run_id)
        [before] = fns.CALLS["before_run"]
        [after] = fns.CALLS["after_run"]
        assert before["run"] == after["run"] == run_id
        assert before["state"] == "running" and after["state"] == "completed"
        assert after["items"]["finished"] == 2


def test_raising_before_run_fails_the_run_and_raising_after_run_is_ignored() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 2}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": "badhooks"}),
        hooks=hooks(before_run="failing_before_run", after_run="failing_after_run"),
    )
    fns.CALLS["after_run_attempted"].clear()
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed" and "refuse to run" in run["error"]
        assert run["items"]["produced"] == 0
        injected = finished_run(rt, rt.trigger("sink", items=[1]))
        assert injected["state"] == "failed"
        assert len(fns.CALLS["after_run_attempted"]) == 2
        assert rt.state == "running"


def test_stats_shape_and_stage_rows() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 100}, auto_start=False),
        stage("work", call="slow", args={"delay": 0.001}, threads=2),
        stage("sink", "consumer", "collect", args={"key": "stats"}),
        track_latency=True,
    )
    with running(spec) as rt:
        finished_run(rt, rt.trigger("src"))
        stats = rt.stats()
        assert set(stats) == {"pipeline", "state", "version", "uptime_s", "runs", "bottleneck", "stages", "buffer"}
        assert stats["buffer"]["kind"] == "memory" and stats["buffer"]["items"] == 0
        assert stats["runs"] == {"started": 1, "completed": 1, "failed": 0, "cancelled": 0, "active": 0}
        assert stats["bottleneck"] == "work"
        row = stats["stages"]["work"]
        assert set(row) == {
            "kind", "items_in", "items_out", "items_failed", "items_retried", "items_dropped",
            "items_dead_lettered", "queue_depth", "queue_capacity", "threads", "processes", "busy",
            "utilization", "throughput_per_s", "throttled_s", "latency_ms",
        }
        assert row["threads"] == 2 and row["queue_capacity"] == 1000 and 0 < row["utilization"] <= 1
        assert row["throughput_per_s"] > 0 and set(row["latency_ms"]) == {"p50", "p90", "p99"}
        rows = {r["name"]: r for r in rt.stage_rows()}
        assert rows["work"]["upstream"] == ["src"] and rows["work"]["downstream"] == ["sink"]
        assert rows["src"]["auto_start"] is False and rows["work"]["requested_threads"] == 2
