"""Links in the engine: LinkTarget sends, linked runs with `parent` (one per sending run, open
until the parent ends), refusals that fail attempts, and a runtime without links."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import engine_stagefns as fns
import pytest
from engine_helpers import finished_run, pipeline, stage, wait_for

from pipelined.config.spec import PipelineSpec
from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.engine.links import LinkRefused, LinkSource, not_running
from pipelined.engine.runs import Run
from pipelined.errors import BadRequest, Conflict, NotFound, RequestError
from pipelined.graph.routing import build_graph


class Direct:
    """A LinkSink over runtimes in this process (the supervisor's LinkRouter, minus slots)."""

    def __init__(self) -> None:
        self.runtimes: dict[str, PipelineRuntime] = {}
        self.deliveries = 0

    def deliver(self, source: LinkSource, target: str, items: list[Any]) -> None:
        pipeline_name, _, stage_name = target.partition("/")
        runtime = self.runtimes.get(pipeline_name)
        if runtime is None:
            raise not_running(pipeline_name)
        try:
            runtime.accept_linked(stage_name, source.parent, items, source.priority, source.on_end)
        except Conflict:
            raise not_running(pipeline_name) from None
        except RequestError as exc:
            raise LinkRefused(exc.detail) from None
        self.deliveries += 1


@contextmanager
def started(sink: Direct | None, *specs: PipelineSpec) -> Iterator[list[PipelineRuntime]]:
    with ExitStack() as stack:
        runtimes = []
        for spec in specs:
            result = build_graph(spec)
            assert result.ok, [str(p) for p in result.problems]
            rt = PipelineRuntime(spec, result.graph, None, PipelineBook(spec.name, None), drain_timeout=5, links=sink)
            rt.start()
            stack.callback(lambda rt=rt: rt.state in ("running", "draining") and rt.drain(5))
            if sink is not None:
                sink.runtimes[spec.name] = rt
            runtimes.append(rt)
        yield runtimes


def target(key: str, name: str = "b", **kw: Any) -> PipelineSpec:
    return pipeline(stage("in", call="inc"), stage("keep", "consumer", "collect", args={"key": key}), name=name, **kw)


def linked_runs(rt: PipelineRuntime, parent: str) -> list[dict[str, Any]]:
    return [r for r in rt.book.runs.list() if r["parent"] == parent]


def test_a_producer_links_straight_to_another_pipeline() -> None:
    source = pipeline(stage("src", "producer", "count_to", args={"n": 500}, auto_start=False, to=("b/in",)), name="a")
    sink = Direct()
    with started(sink, target("direct"), source) as (b, a):
        run = finished_run(a, a.trigger("src"))
        assert run["state"] == "completed" and run["items"]["finished"] == 500, run
        assert wait_for(lambda: len(fns.COLLECTED["direct"]) == 500)
        [linked] = linked_runs(b, f"a/{run['run']}")
        assert wait_for(lambda: b.book.runs.get(linked["run"])["state"] == "completed")
        assert b.book.runs.get(linked["run"])["items"]["finished"] == 500
        assert sorted(fns.COLLECTED["direct"]) == list(range(1, 501))
        assert a.book.runs.get(run["run"])["parent"] is None


def test_a_linked_run_stays_open_until_its_parent_ends() -> None:
    source = pipeline(
        stage("src", "producer", "pause_between", args={"key": "open"}, auto_start=False),
        stage("fwd", call="inc", to=("b/in",)),
        name="a",
    )
    sink = Direct()
    with started(sink, target("open-b"), source) as (b, a):
        run_id = a.trigger("src")
        assert wait_for(lambda: len(fns.COLLECTED["open-b"]) == 3)
        [linked] = linked_runs(b, f"a/{run_id}")
        assert linked["state"] == "running" and linked["items"]["in_flight"] == 0  # waits for more
        fns.EVENTS["open"].set()
        assert finished_run(a, run_id)["state"] == "completed"
        assert wait_for(lambda: b.book.runs.get(linked["run"])["state"] == "completed")
        assert [r["run"] for r in linked_runs(b, f"a/{run_id}")] == [linked["run"]]
        assert b.book.runs.get(linked["run"])["items"]["produced"] == 6
        assert b.linked.open_count() == 0


def test_an_accumulator_and_an_async_stage_send_over_links() -> None:
    source = pipeline(
        stage("src", "producer", "count_to", args={"n": 25}, auto_start=False, to=("batch", "aio"), fanout="broadcast"),
        stage("batch", "accumulator", max_size=10, to=("b/in",)),
        stage("aio", "consumer", "async_split_to", args={"target": "c/keep"}, threads=4),
        name="a",
    )
    b = pipeline(stage("in", "consumer", "collect", args={"key": "batches"}), name="b")
    c = pipeline(stage("keep", "consumer", "collect", args={"key": "async"}), name="c")
    sink = Direct()
    with started(sink, b, c, source) as (_, _, a):
        run = finished_run(a, a.trigger("src"))
        assert run["state"] == "completed", run
        assert wait_for(lambda: len(fns.COLLECTED["batches"]) == 3 and len(fns.COLLECTED["async"]) == 25)
        assert sorted(len(batch) for batch in fns.COLLECTED["batches"]) == [5, 10, 10]
        assert sorted(fns.COLLECTED["async"]) == list(range(25))


def test_without_links_every_attempt_fails_and_is_dead_lettered_with_the_spec_error() -> None:
    source = pipeline(
        stage("src", "producer", "count_to", args={"n": 4}, auto_start=False),
        stage("fwd", call="inc", to=("billing/charge",), max_retries=2, retry_backoff=0.001),
        name="a",
    )
    with started(None, source) as (a,):
        run = finished_run(a, a.trigger("src"))
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 4, run
        letters = a.book.dead_letters.list(10)
        assert {(d["stage"], d["attempts"], d["error"]) for d in letters} == {
            ("fwd", 3, "pipeline 'billing' is not running")
        }
        assert sorted(d["item"] for d in letters) == [0, 1, 2, 3]  # the items fwd was called with
        counters = a.stats()["stages"]["fwd"]
        assert counters["items_failed"] == 12 and counters["items_retried"] == 8


def test_emit_to_a_link_named_at_run_time_is_retried_in_place() -> None:
    source = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}, auto_start=False),
        stage("fwd", "consumer", "split_to", args={"target": "nowhere/x"}, max_retries=1, retry_backoff=0.001),
        name="a",
    )
    with started(None, source) as (a,):
        run = finished_run(a, a.trigger("src"))
        assert run["items"]["dead_lettered"] == 3, run
        assert {d["error"] for d in a.book.dead_letters.list(10)} == {"pipeline 'nowhere' is not running"}


def test_a_target_stage_that_is_missing_or_a_producer_refuses_with_its_reason() -> None:
    b = pipeline(stage("gen", "producer", "count_to", auto_start=False), stage("in", "consumer", "collect"), name="b")
    sink = Direct()
    with started(sink, b) as (rt,):
        with pytest.raises(NotFound, match="has no stage 'nope'"):
            rt.accept_linked("nope", "a/r-000001", [1])
        with pytest.raises(BadRequest, match="is a producer"):
            rt.accept_linked("gen", "a/r-000001", [1])
        with pytest.raises(BadRequest, match="non-empty list"):
            rt.accept_linked("in", "a/r-000001", [])
        rt.drain(5)
        with pytest.raises(Conflict, match="drained"):
            rt.accept_linked("in", "a/r-000001", [1])


def test_a_drained_version_ends_its_linked_runs_and_the_next_version_starts_a_new_one() -> None:
    sink = Direct()
    book = PipelineBook("b", None)
    spec = target("versions")
    graph = build_graph(spec).graph
    first = PipelineRuntime(spec, graph, None, book, links=sink)
    first.start()
    ended: list[str] = []
    parent = Run("r-000009", "a", "src", None)
    first.accept_linked("in", "a/r-000009", [1, 2], None, parent.on_end)
    [open_run] = linked_runs(first, "a/r-000009")
    first.drain(5)
    assert book.runs.get(open_run["run"])["state"] == "completed"
    second = PipelineRuntime(spec, graph, None, book, links=sink)
    second.start()
    try:
        second.accept_linked("in", "a/r-000009", [3], None, parent.on_end)
        runs = linked_runs(second, "a/r-000009")
        assert len(runs) == 2 and runs[0]["state"] == "running" and runs[0]["items"]["produced"] == 1
        parent.on_end(lambda: ended.append("parent"))
        parent.source_finished()  # the parent ends: its open linked run in the new version ends too
        assert ended == ["parent"]
        assert wait_for(lambda: book.runs.get(runs[0]["run"])["state"] == "completed")
    finally:
        second.drain(5)
    assert sorted(fns.COLLECTED["versions"]) == [2, 3, 4]


def test_on_end_runs_callbacks_once_and_at_once_after_the_end() -> None:
    run = Run("r-000001", "p", "s", None)
    calls: list[int] = []
    run.on_end(lambda: calls.append(1))
    run.settle(enter=1)
    run.source_finished()
    assert calls == []
    run.settle(leave=1)
    assert calls == [1]
    run.on_end(lambda: calls.append(2))
    assert calls == [1, 2]
    assert not run.join()


def test_a_refusal_is_logged_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    source = pipeline(
        stage("src", "producer", "count_to", args={"n": 1}, auto_start=False),
        stage("fwd", call="inc", to=("b/in",), max_retries=1, retry_backoff=0.001),
        name="a",
    )
    with caplog.at_level(logging.ERROR, logger="pipelined.engine"), started(None, source) as (a,):
        assert finished_run(a, a.trigger("src"))["state"] == "failed"
    records = [r.getMessage() for r in caplog.records if r.name == "pipelined.engine"]
    assert records and all("pipeline 'b' is not running" in text for text in records), records
    assert not any("Traceback" in text for text in records)
    assert records[0].startswith("item failed on attempt 1: pipeline 'b' is not running")


def test_a_broadcast_to_a_local_queue_and_a_link_is_all_or_nothing() -> None:
    def source(key: str) -> PipelineSpec:
        return pipeline(
            stage("src", "producer", "count_to", args={"n": 3}, auto_start=False),
            stage("fwd", call="inc", to=("b/in", "keep"), fanout="broadcast", max_retries=2, retry_backoff=0.001),
            stage("keep", "consumer", "collect", args={"key": key}),
            name="a",
        )

    with started(None, source("bc-refused")) as (a,):
        run = finished_run(a, a.trigger("src"))
        assert run["items"]["dead_lettered"] == 3, run
        assert fns.COLLECTED["bc-refused"] == []  # the link refused: the queue got nothing either
    sink = Direct()
    with started(sink, target("bc-remote"), source("bc-local")) as (_, a):
        run = finished_run(a, a.trigger("src"))
        assert run["state"] == "completed" and run["items"]["finished"] == 6, run
        assert wait_for(lambda: len(fns.COLLECTED["bc-remote"]) == 3)
        assert sorted(fns.COLLECTED["bc-local"]) == [1, 2, 3]
        assert sorted(fns.COLLECTED["bc-remote"]) == [2, 3, 4]  # b's `in` adds one more


@pytest.mark.parametrize("sender", ["producer", "accumulator", "processor"])
def test_two_links_in_one_send_one_refusing_each_item_crosses_once(sender: str) -> None:
    """b takes its part, then c (not running) refuses: the retries go to c alone, then its part
    is dead-lettered at the sending stage; b never gets an item twice (it got one per retry)."""
    key = f"two-links-{sender}"
    fan = {"to": ("b/in", "c/in"), "fanout": "broadcast", "max_retries": 2, "retry_backoff": 0.001}
    if sender == "producer":
        stages = (stage("src", "producer", "count_to", args={"n": 5}, auto_start=False, **fan),)
    elif sender == "accumulator":
        stages = (
            stage("src", "producer", "count_to", args={"n": 5}, auto_start=False),
            stage("acc", "accumulator", max_size=5, **fan),
        )
    else:
        stages = (stage("src", "producer", "count_to", args={"n": 5}, auto_start=False), stage("fwd", call="inc", **fan))
    source = pipeline(*stages, name="a")
    b_spec = pipeline(stage("in", "consumer", "collect", args={"key": key}), name="b")  # takes a batch too
    sink = Direct()
    with started(sink, b_spec, source) as (_, a):
        run = finished_run(a, a.trigger("src"))
        assert run["state"] == "failed" and "pipeline 'c' is not running" in run["error"], run
        crossed = 1 if sender == "accumulator" else 5  # one batch of five
        assert (run["items"]["finished"], run["items"]["dead_lettered"]) == (crossed, crossed), run
        assert wait_for(lambda: len(fns.COLLECTED[key]) == crossed)
        assert len(fns.COLLECTED[key]) == crossed  # b: each item (or the batch) once, never again
        letters = a.book.dead_letters.list(100)
        assert {(d["stage"], d["attempts"], d["error"]) for d in letters} == {
            (stages[-1].name, 3, "pipeline 'c' is not running")
        }


def test_a_linked_run_takes_the_sending_runs_priority() -> None:
    source = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}, auto_start=False, priority=-4),
        stage("fwd", call="inc", to=("b/in",)),
        name="a",
    )
    sink = Direct()
    with started(sink, target("prio"), source) as (b, a):
        for priority in (7, None):  # the trigger's, else the producer's key
            run = finished_run(a, a.trigger("src", priority=priority))
            [linked] = linked_runs(b, f"a/{run['run']}")
            assert (run["priority"], linked["priority"]) == ((7, 7) if priority else (-4, -4)), (run, linked)
