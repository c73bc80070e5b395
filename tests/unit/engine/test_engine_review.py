"""Defects found by the fresh-eyes review of issues 10 and 15 (session 3), each reproduced here
first: what the engine must do with real user values and at the edges of a drain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import review_stagefns as rfns
from engine_helpers import build_graph_for, pipeline, stage, wait_for

from pipelined.engine import PipelineBook, PipelineRuntime

R = "review_stagefns"


def start(spec: Any, tmp_path: Path, drain_timeout: float = 5.0) -> PipelineRuntime:
    rt = PipelineRuntime(spec, build_graph_for(spec), None, PipelineBook("p", tmp_path), drain_timeout=drain_timeout)
    rt.start()
    return rt


def adds_up(items: dict[str, int]) -> bool:
    return items["in_flight"] == 0 and items["finished"] + items["filtered"] + items["dead_lettered"] == items["produced"]


# -- a drain deadline while a chunk's finished items already went on (lateoutputs.py) -----------
@pytest.mark.parametrize("call", ["hold_at", "hold_at_ctx", "gen_hold_at", "ahold_at"])
def test_items_whose_outputs_went_on_early_are_not_dead_lettered_at_the_drain_deadline(
    tmp_path: Path, call: str
) -> None:
    """Items 1..29 of a chunk are done and their outputs delivered while item 30 is stuck; the
    drain deadline dead-letters what is left — items 30..49 — never 1..29 as well (they would
    be counted twice and reprocessed from the dead letters)."""
    key = f"deadline-early-{call}"
    spec = pipeline(
        stage("a", call=f"{R}:{call}", args={"key": key, "at": 30}),
        stage("sink", "consumer", f"{R}:keep", args={"key": key}),
    )
    rt = start(spec, tmp_path, drain_timeout=0.3)
    try:
        run_id = rt.trigger("a", items=list(range(50)))
        assert wait_for(lambda: len(rfns.GOT[key]) >= 30), rfns.GOT[key]
        rt.drain(0.3)
    finally:
        rfns.GATES[key].set()
    run = rt.book.runs.get(run_id)
    letters = sorted(letter["item"] for letter in rt.book.dead_letters.list(1000))
    assert sorted(rfns.GOT[key]) == list(range(30))
    assert letters == list(range(30, 50)), letters
    assert adds_up(run["items"]), run
    assert rt.stats()["stages"]["a"]["items_out"] >= 29


# -- guards: what the review tried that held (issue 15's items 1, 3 and 8 on every kind of stage) --
@pytest.mark.parametrize(("call", "extra"), [
    ("to_ambiguous", {}), ("to_ambiguous_ctx", {}), ("to_ambiguous_async", {}), ("to_ambiguous", {"threads": 3}),
])  # fmt: skip
def test_outputs_whose_eq_is_elementwise_pass_every_kind_of_stage_and_an_accumulator(
    tmp_path: Path, call: str, extra: dict[str, Any]
) -> None:
    key = f"ambiguous-{call}-{len(extra)}"
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 50}, auto_start=False),
        stage("a", call=f"{R}:{call}", **extra),
        stage("b", call=f"{R}:from_ambiguous", to=("sink", "acc"), fanout="broadcast"),
        stage("sink", "consumer", f"{R}:keep", args={"key": key}),
        stage("acc", "accumulator", max_size=7, to=("last",)),
        stage("last", "consumer", f"{R}:keep", args={"key": key + "-batches"}),
    )
    rt = start(spec, tmp_path)
    try:
        run_id = rt.trigger("src")
        assert rt.book.runs.wait(run_id, 10)
        run = rt.book.runs.get(run_id)
    finally:
        rt.drain(5)
    assert run["state"] == "completed" and run["items"]["dead_lettered"] == 0, run
    assert sorted(rfns.GOT[key]) == list(range(50))
    assert sorted(x for batch in rfns.GOT[key + "-batches"] for x in batch) == list(range(50))


@pytest.mark.parametrize("what", ["StopIteration", "SystemExit", "KeyboardInterrupt", "GeneratorExit"])
@pytest.mark.parametrize("call", ["raise_at", "raise_at_ctx", "araise_at", "gen_raise_at"])
def test_an_item_raising_a_base_exception_fails_alone_and_the_counts_add_up(
    tmp_path: Path, what: str, call: str
) -> None:
    key = f"raise-{call}-{what}"
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 20}, auto_start=False),
        stage("a", call=f"{R}:{call}", args={"what": what}, max_retries=1, retry_backoff=0.01),
        stage("sink", "consumer", f"{R}:keep", args={"key": key}),
    )
    rt = start(spec, tmp_path)
    try:
        for _ in range(2):  # the stage keeps working after it
            run_id = rt.trigger("src")
            assert rt.book.runs.wait(run_id, 10)
            run = rt.book.runs.get(run_id)
            assert run["items"]["finished"] == 19 and run["items"]["dead_lettered"] == 1, run
            assert adds_up(run["items"])
        stats = rt.stats()["stages"]["a"]
    finally:
        rt.drain(5)
    assert sorted(rfns.GOT[key]) == sorted([x for x in range(20) if x != 3] * 2)
    assert (stats["items_failed"], stats["items_dead_lettered"]) == (4, 2), stats
