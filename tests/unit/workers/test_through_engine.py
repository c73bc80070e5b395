"""A `processes = 2` stage inside a real PipelineRuntime: crash → retry, stats, clean drain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.graph import build_graph
from pipelined.spec import PipelineSpec, StageSpec

from .conftest import USERLAND, new_children


def _spec(work: StageSpec) -> PipelineSpec:
    return PipelineSpec(
        name="wflow",
        file=USERLAND / "wflow.toml",
        version="0" * 12,
        stages=(
            StageSpec(name="src", kind="producer", call="wstages:items_of", auto_start=False),
            work,
            StageSpec(name="sink", kind="consumer", call="wstages:collect"),
        ),
        python_path=(USERLAND,),
        max_processes=2,
        retry_backoff=0.01,
    )


@pytest.mark.parametrize("mode", ["pool", "fork_per_item"])
def test_sigkilled_item_is_retried_and_the_run_completes(tmp_path: Path, mode: str) -> None:
    work = StageSpec(name="work", call="wstages:kill_marked", args={"marker": str(tmp_path / "died")},
                     processes=2, process_mode=mode)  # type: ignore[arg-type]
    spec = _spec(work)
    graph = build_graph(spec).graph
    runtime = PipelineRuntime(spec, graph, None, PipelineBook(spec.name, tmp_path), drain_timeout=5.0)
    runtime.start()
    wstages = sys.modules["wstages"]  # the engine imported it (sink runs in a thread) with python_path
    try:
        assert runtime.live_workers()[1] >= 1
        wstages.COLLECTED.clear()
        values: list[Any] = ["a", "die", *range(50)]
        run_id = runtime.trigger("src", args={"values": values})
        assert runtime.book.runs.wait(run_id, 20.0)
        run = runtime.book.runs.get(run_id)
        assert run["state"] == "completed", run
        assert sorted(map(str, wstages.COLLECTED)) == sorted(map(str, values))
        row = runtime.stats()["stages"]["work"]
        assert row["items_out"] == len(values) and row["items_retried"] >= 1
    finally:
        runtime.drain(5.0)
    assert new_children() == []
