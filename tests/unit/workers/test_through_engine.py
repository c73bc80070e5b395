"""A `processes = 2` stage inside a real PipelineRuntime: crash → retry, stats, clean drain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.graph.routing import build_graph
from pipelined.workers.batch_outcomes import BatchOutcomes

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


def _run(runtime: PipelineRuntime, values: list[Any]) -> dict[str, Any]:
    run_id = runtime.trigger("src", args={"values": values})
    assert runtime.book.runs.wait(run_id, 20.0), runtime.book.runs.get(run_id)
    run: dict[str, Any] = runtime.book.runs.get(run_id)
    return run


def test_batches_taken_in_bulk_keep_outputs_filtered_counts_and_failures(tmp_path: Path) -> None:
    """Whole batches take the bulk path (plain_outputs / filtered_count), batches with a failed
    item the per-item path: outputs, filtered counts and stats must agree either way."""
    spec = _spec(StageSpec(name="work", call="wstages:keep_even", processes=2))
    runtime = PipelineRuntime(spec, build_graph(spec).graph, None, PipelineBook(spec.name, tmp_path))
    runtime.start()
    wstages = sys.modules["wstages"]
    pool = runtime.stages["work"].pool
    replies: list[Any] = []
    process = pool.process

    def recording(run_id: str | None, items: list[Any]) -> Any:
        replies.append(process(run_id, items))
        return replies[-1]

    pool.process = recording
    try:
        wstages.COLLECTED.clear()
        values = list(range(3000))
        run = _run(runtime, values)
        assert run["state"] == "completed", run
        assert sorted(wstages.COLLECTED) == list(range(0, 3000, 2))
        assert replies and all(isinstance(r, BatchOutcomes) and r._made is None for r in replies)
        assert run["items"]["filtered"] == 1500 and run["items"]["finished"] == 1500
        row = runtime.stats()["stages"]["work"]
        assert (row["items_in"], row["items_out"], row["items_failed"]) == (3000, 1500, 0)

        wstages.COLLECTED.clear()
        run = _run(runtime, [*range(10), "odd one out", *range(10, 20)])  # "str % 2" raises
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 1, run
        assert sorted(wstages.COLLECTED) == list(range(0, 20, 2))
        assert run["items"]["filtered"] == 10
    finally:
        runtime.drain(5.0)


def test_a_rejecting_downstream_fails_only_the_refused_items(tmp_path: Path) -> None:
    """Downstream `on_full = "reject"`: each item's outputs are routed on their own; a refused
    item fails its attempt (retried, then dead-lettered) and the feeder keeps going."""
    sink = StageSpec(name="sink", kind="consumer", call="wstages:slow", queue_size=2, on_full="reject")
    spec = PipelineSpec(
        name="wreject", file=USERLAND / "wreject.toml", version="0" * 12, python_path=(USERLAND,),
        max_processes=2, retry_backoff=0.01,
        stages=(StageSpec(name="src", kind="producer", call="wstages:items_of", auto_start=False),
                StageSpec(name="work", call="wstages:add", processes=2, max_retries=1),
                sink),
    )
    runtime = PipelineRuntime(spec, build_graph(spec).graph, None, PipelineBook(spec.name, tmp_path))
    runtime.start()
    try:
        run = _run(runtime, [0.005] * 60)
        items = run["items"]
        assert items["produced"] == 60 == items["finished"] + items["dead_lettered"], run
        assert items["in_flight"] == 0
        row = runtime.stats()["stages"]["work"]
        assert row["items_failed"] >= items["dead_lettered"] > 0
        letters = runtime.book.dead_letters.list(100)
        assert letters and all("QueueRejected" in str(letter) for letter in letters)
    finally:
        runtime.drain(5.0)


def test_take_size_grows_with_fast_items_and_shares_slow_ones() -> None:
    """A feeder takes up to MAX_TAKE fast items per process() call (not 16), slow items in
    calls of about CALL_BUDGET_S, and at most its share of a short queue."""
    from types import SimpleNamespace

    from pipelined.engine import processstage
    from pipelined.engine.processstage import CALL_BUDGET_S, FIRST_TAKE, MAX_TAKE, ProcessStageRunner

    runner = ProcessStageRunner.__new__(ProcessStageRunner)
    runner.workers = 2

    def size(per_item: float | None, depth: int) -> int:
        runner.per_item_s = per_item
        runner.queue = SimpleNamespace(depth=depth)  # type: ignore[assignment]
        return runner._take_size()

    assert MAX_TAKE >= 1000 and processstage.FIRST_TAKE == FIRST_TAKE
    assert size(None, 1000) == FIRST_TAKE  # nothing measured yet
    assert size(1e-6, 1000) == MAX_TAKE and size(1e-6, 10) == MAX_TAKE  # fast: everything queued
    assert size(1e-3, 1000) == int(CALL_BUDGET_S / 1e-3)  # slow: about CALL_BUDGET_S of work
    assert size(1e-4, 30) == 15  # a short queue is shared between the feeders
    assert size(1e-4, 0) == int(CALL_BUDGET_S / 1e-4)  # empty: take what arrives, up to the budget
    assert size(10.0, 1000) == 1


def test_a_rejecting_queue_elsewhere_keeps_the_bulk_path(tmp_path: Path) -> None:
    """Only a downstream that may refuse forces per-item routing of a plain function's batch
    (it cannot ctx.emit_to); a rejecting queue elsewhere in the pipeline does not."""
    spec = PipelineSpec(
        name="wside", file=USERLAND / "wside.toml", version="0" * 12, python_path=(USERLAND,), max_processes=2,
        stages=(StageSpec(name="src", kind="producer", call="wstages:items_of", auto_start=False),
                StageSpec(name="work", call="wstages:keep_even", processes=2),
                StageSpec(name="sink", kind="consumer", call="wstages:collect"),
                StageSpec(name="src2", kind="producer", call="wstages:items_of", auto_start=False),
                StageSpec(name="side", kind="consumer", call="wstages:collect", on_full="reject")),
    )
    runtime = PipelineRuntime(spec, build_graph(spec).graph, None, PipelineBook(spec.name, tmp_path))
    runtime.start()
    wstages = sys.modules["wstages"]
    pool = runtime.stages["work"].pool
    replies: list[Any] = []
    process = pool.process

    def recording(run_id: str | None, items: list[Any]) -> Any:
        replies.append(process(run_id, items))
        return replies[-1]

    pool.process = recording
    try:
        wstages.COLLECTED.clear()
        run = _run(runtime, list(range(500)))
        assert run["state"] == "completed" and run["items"]["filtered"] == 250, run
        assert sorted(wstages.COLLECTED) == list(range(0, 500, 2))
        assert replies and all(isinstance(r, BatchOutcomes) and r._made is None for r in replies)
    finally:
        runtime.drain(5.0)
