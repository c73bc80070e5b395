"""Nothing of a run's items is kept once the run has ended (the pipeline keeps running)."""

from __future__ import annotations

import gc
import weakref

import engine_stagefns
import pytest
from engine_helpers import finished_run, pipeline, running, stage

from pipelined.config.spec import StageSpec


def _alive(refs: list[weakref.ref[object]]) -> list[object]:
    gc.collect()
    return [obj for ref in refs if (obj := ref()) is not None]


@pytest.mark.parametrize("threads", [1, 3])
def test_injected_items_are_not_referenced_after_their_run_ends(threads: int) -> None:
    spec = pipeline(
        stage("proc", call="passthrough", threads=threads),
        stage("sink", kind="consumer", call="discard", threads=threads),
    )
    with running(spec) as rt:
        items = [engine_stagefns.Blob(i) for i in range(20)]
        refs = [weakref.ref(item) for item in items]
        run = finished_run(rt, rt.trigger("proc", items=items))
        assert run["state"] == "completed" and run["items"]["finished"] == 20
        del items
        alive = _alive(refs)
        assert not alive, f"{len(alive)} item(s) of an ended run still referenced: {gc.get_referrers(alive[0])!r:.800}"


@pytest.mark.parametrize(
    "middle",
    [
        stage("mid", kind="accumulator", max_size=7, max_wait=0.05),
        stage("mid", call="async_passthrough"),
        stage("mid", call="passthrough", processes=1, start_method="fork"),
    ],
    ids=["accumulator", "async", "processes"],
)
def test_items_through_every_kind_of_stage_are_not_referenced_after_their_run(middle: StageSpec) -> None:
    engine_stagefns.BLOB_REFS.clear()
    spec = pipeline(
        stage("src", kind="producer", call="blobs", args={"n": 30}),
        middle,
        stage("sink", kind="consumer", call="discard"),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed", run
        alive = _alive(engine_stagefns.BLOB_REFS)
        assert not alive, f"{len(alive)} item(s) of an ended run still referenced: {gc.get_referrers(alive[0])!r:.800}"


def test_produced_items_are_not_referenced_after_their_run_ends() -> None:
    engine_stagefns.BLOB_REFS.clear()
    spec = pipeline(
        stage("src", kind="producer", call="blobs", args={"n": 30}),
        stage("proc", call="passthrough"),
        stage("sink", kind="consumer", call="discard"),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed" and run["items"]["finished"] == 30
        alive = _alive(engine_stagefns.BLOB_REFS)
        assert not alive, f"{len(alive)} item(s) of an ended run still referenced: {gc.get_referrers(alive[0])!r:.800}"
