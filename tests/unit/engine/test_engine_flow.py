"""Items through linear, fan-out and fan-in graphs; run counters and end-of-run."""

from __future__ import annotations

import engine_stagefns as fns
from engine_helpers import finished_run, pipeline, running, stage


def test_linear_pipeline_completes_with_exact_counters() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 1000}, auto_start=False),
        stage("inc", call="inc"),
        stage("double", call="double"),
        stage("sink", "consumer", "collect", args={"key": "linear"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert run["items"] == {"produced": 1000, "in_flight": 0, "finished": 1000, "filtered": 0, "dead_lettered": 0}
        assert run["error"] is None and run["finished_at"] is not None
        assert sorted(fns.COLLECTED["linear"]) == [(i + 1) * 2 for i in range(1000)]
        stages = rt.stats()["stages"]
        assert stages["inc"]["items_in"] == 1000 and stages["inc"]["items_out"] == 1000
        assert stages["src"]["items_out"] == 1000 and stages["src"]["items_in"] == 0
        assert stages["sink"]["items_in"] == 1000 and stages["sink"]["items_out"] == 0


def test_auto_start_producer_runs_once_at_start() -> None:
    spec = pipeline(
        stage("src", "producer", "numbers_list", args={"n": 4}),
        stage("sink", "consumer", "collect", args={"key": "auto"}),
    )
    with running(spec) as rt:
        [run] = rt.book.runs.list()
        run = finished_run(rt, run["run"])
        assert run["state"] == "completed" and run["run"] == "r-000001"
        assert sorted(fns.COLLECTED["auto"]) == [0, 1, 2, 3]


def test_fan_in_waits_for_the_slower_sender() -> None:
    # src broadcasts to a fast and a slow stage; both feed one sink. The fast branch is done
    # long before the slow one; the run must stay running until the slow branch delivered.
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 20}, auto_start=False,
              to=("fast", "slow"), fanout="broadcast"),
        stage("fast", call="inc", to=("sink",)),
        stage("slow", call="slow", args={"delay": 0.01}, to=("sink",)),
        stage("sink", "consumer", "collect", args={"key": "fanin"}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        assert rt.book.runs.get(run_id)["state"] == "running"
        run = finished_run(rt, run_id)
        assert run["state"] == "completed"
        assert len(fns.COLLECTED["fanin"]) == 40
        assert run["items"]["finished"] == 40 and run["items"]["produced"] == 20


def test_emit_to_sender_is_waited_for() -> None:
    # split returns each item to `fast` and sends a copy with ctx.emit_to to `slow`;
    # both feed `sink` (fan-in of a routed and an emit_to sender).
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 10}, auto_start=False),
        stage("split", call="split_to", args={"target": "slow"}, to=("fast",)),
        stage("fast", call="inc", to=("sink",)),
        stage("slow", call="slow", args={"delay": 0.01}, to=("sink",)),
        stage("sink", "consumer", "collect", args={"key": "emitto"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert len(fns.COLLECTED["emitto"]) == 20
        assert run["items"]["finished"] == 20


def test_filter_and_generator_counts() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 10}, auto_start=False),
        stage("evens", call="evens"),
        stage("twice", call="twice"),
        stage("sink", "consumer", "collect", args={"key": "filter"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["items"]["filtered"] == 5
        assert run["items"]["finished"] == 10
        assert sorted(fns.COLLECTED["filter"]) == sorted([0, 2, 4, 6, 8] * 2)
        assert rt.stats()["stages"]["twice"]["items_out"] == 10


def test_terminal_processor_outputs_count_as_finished() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 5}, auto_start=False),
        stage("last", call="inc"),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed" and run["items"]["finished"] == 5


def test_broadcast_copies_each_count() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 30}, auto_start=False,
              to=("a", "b", "c"), fanout="broadcast"),
        stage("a", "consumer", "collect", args={"key": "bc-a"}),
        stage("b", "consumer", "collect", args={"key": "bc-b"}),
        stage("c", "consumer", "collect", args={"key": "bc-c"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["items"]["finished"] == 90
        for key in ("bc-a", "bc-b", "bc-c"):
            assert sorted(fns.COLLECTED[key]) == list(range(30))
        assert rt.stats()["stages"]["src"]["items_out"] == 30


def test_round_robin_splits_evenly() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 300}, auto_start=False, to=("a", "b")),
        stage("a", "consumer", "collect", args={"key": "rr-a"}),
        stage("b", "consumer", "collect", args={"key": "rr-b"}),
    )
    with running(spec) as rt:
        finished_run(rt, rt.trigger("src"))
        a, b = len(fns.COLLECTED["rr-a"]), len(fns.COLLECTED["rr-b"])
        assert a + b == 300 and abs(a - b) <= 2


def test_weighted_proportions() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 4000}, auto_start=False,
              to=("a", "b"), fanout="weighted", weights={"a": 1, "b": 3}),
        stage("a", "consumer", "collect", args={"key": "w-a"}),
        stage("b", "consumer", "collect", args={"key": "w-b"}),
    )
    with running(spec) as rt:
        finished_run(rt, rt.trigger("src"))
        a, b = len(fns.COLLECTED["w-a"]), len(fns.COLLECTED["w-b"])
        assert a + b == 4000
        assert abs(a - 1000) <= 4, (a, b)


def test_injected_items_run_at_a_middle_stage() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", auto_start=False),
        stage("inc", call="inc"),
        stage("sink", "consumer", "collect", args={"key": "inject"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("inc", items=[1, 2, 3]))
        assert run["stage"] == "inc" and run["state"] == "completed"
        assert run["items"]["produced"] == 3 and run["items"]["finished"] == 3
        assert sorted(fns.COLLECTED["inject"]) == [2, 3, 4]


def test_class_async_and_async_generator_callables() -> None:
    spec = pipeline(
        stage("src", "producer", "async_numbers", args={"n": 50}, auto_start=False),
        stage("scale", call="Scaler", args={"factor": 3}),
        stage("ainc", call="async_inc", threads=8, args={"delay": 0.001}),
        stage("sink", "consumer", "collect", args={"key": "kinds"}),
    )
    fns.Scaler.setups = fns.Scaler.closes = 0
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert sorted(fns.COLLECTED["kinds"]) == [i * 3 + 1 for i in range(50)]
        assert fns.Scaler.setups == 1
    assert fns.Scaler.closes == 1


def test_class_producer_gets_trigger_args_in_call() -> None:
    spec = pipeline(
        stage("src", "producer", "Counter", args={"base": 100}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": "classprod"}),
    )
    with running(spec) as rt:
        finished_run(rt, rt.trigger("src", args={"n": 2}))
        assert sorted(fns.COLLECTED["classprod"]) == [100, 101]


def test_producer_runs_queue_fifo_beyond_its_threads() -> None:
    spec = pipeline(
        stage("src", "producer", "gated", args={"key": "fifo"}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": "fifo-out"}),
    )
    with running(spec) as rt:
        first, second = rt.trigger("src"), rt.trigger("src")
        waiting = rt.book.runs.get(second)
        assert waiting["state"] == "running" and waiting["items"]["produced"] == 0
        fns.EVENTS["fifo"].set()
        assert finished_run(rt, first)["state"] == "completed"
        assert finished_run(rt, second)["state"] == "completed"
        assert rt.stats()["runs"]["completed"] == 2


def test_nested_pipeline_has_its_own_stats_row() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 6}, auto_start=False),
        stage("inner", "pipeline", stages=(stage("i1", call="inc"), stage("i2", call="double"))),
        stage("sink", "consumer", "collect", args={"key": "nested"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert sorted(fns.COLLECTED["nested"]) == [(i + 1) * 2 for i in range(6)]
        row = rt.stats()["stages"]["inner"]
        assert row["kind"] == "pipeline" and row["items_in"] == 6 and row["items_out"] == 6


def test_one_thread_stages_keep_the_order_of_one_upstream() -> None:
    # fast one-thread stages may run inline in their sender's thread; order must not change
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 20_000}, auto_start=False),
        stage("inc", call="inc"),
        stage("double", call="double"),
        stage("sink", "consumer", "collect", args={"key": "order"}),
    )
    with running(spec) as rt:
        for _ in range(2):
            finished_run(rt, rt.trigger("src"))
        expected = [(i + 1) * 2 for i in range(20_000)]
        assert fns.COLLECTED["order"] == expected + expected


def test_async_stage_awaits_up_to_threads_items_at_once() -> None:
    # each call waits until 32 are awaited together (no wall clock): exactly `threads` at once
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 64}, auto_start=False),
        stage("wait", call="async_overlap", threads=32, args={"key": "async-conc", "until": 32}),
        stage("sink", "consumer", "collect", args={"key": "async-conc"}),
    )
    with running(spec) as rt:
        finished_run(rt, rt.trigger("src"))
        assert sorted(fns.COLLECTED["async-conc"]) == list(range(1, 65))
        assert fns.PEAK["async-conc"] == 32
        assert rt.stats()["stages"]["wait"]["threads"] == 32


def test_outputs_of_a_slow_stage_flow_on_while_its_queue_is_full() -> None:
    # 40 items queue up at once behind a 50 ms stage: a worker must not take them all and hold
    # every output until the last is done. The first results reach the consumer while most of
    # the items are still waiting (~2 s of work in all).
    import time

    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 40}, auto_start=False),
        stage("slow", call="slow", args={"delay": 0.05}),
        stage("sink", "consumer", "collect", args={"key": "slowflow"}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        deadline = time.monotonic() + 10
        while not fns.COLLECTED["slowflow"]:
            assert time.monotonic() < deadline, "nothing reached the consumer"
            time.sleep(0.005)
        assert rt.book.runs.get(run_id)["items"]["in_flight"] > 20  # most still queued
        assert finished_run(rt, run_id)["state"] == "completed"
        assert sorted(fns.COLLECTED["slowflow"]) == list(range(40))


def test_injected_items_spread_over_all_threads_of_a_stage() -> None:
    # One chunk of 8 items into a 4-thread stage: all four threads work on it at once (a taker
    # that leaves items behind wakes an idle sibling), not one thread after the other.
    spec = pipeline(
        stage("work", call="overlap", args={"key": "spread4"}, threads=4),
        stage("sink", "consumer", "collect", args={"key": "spread4"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("work", items=list(range(8))))
        assert run["state"] == "completed" and run["items"]["finished"] == 8
        assert fns.PEAK["spread4"] == 4
