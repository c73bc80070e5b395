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
