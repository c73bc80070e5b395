"""Limits: scaling, at-least-one, remainder in file order, nested budgets, async, cuts, daemon budget."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.graph.limits import (
    Allocation,
    Cut,
    DaemonBudget,
    StageAllocation,
    allocate,
    pipeline_demand,
    share,
)
from pipelined.graph.routing import build_graph


def stage(name: str, kind: str = "processor", **kw: object) -> StageSpec:
    return StageSpec(name=name, kind=kind, call=None if kind in ("accumulator", "pipeline") else "m:f", **kw)  # type: ignore[arg-type]


def spec_of(*stages: StageSpec, max_threads: int = 5, max_processes: int = 2) -> PipelineSpec:
    return PipelineSpec(
        name="p",
        file=Path("/c/p.toml"),
        version="0" * 12,
        stages=stages,
        max_threads=max_threads,
        max_processes=max_processes,
    )


def run_allocate(
    spec: PipelineSpec, threads: int | None = None, processes: int | None = None, **kw: object
) -> Allocation:
    result = build_graph(spec)
    return allocate(spec, result.graph, threads, processes, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("asks", "budget", "grants"),
    [
        ([1, 4, 1], 8, [1, 4, 1]),  # fits: unchanged
        ([4, 4], 5, [3, 2]),  # 2.5 → 2 each, the remaining 1 to the first
        ([1, 10, 10], 7, [1, 3, 3]),  # 1/3 → at least 1
        ([1, 1, 1], 2, [1, 1, 1]),  # at least one each, even over the budget
        ([5] * 7, 10, [2, 2, 2, 1, 1, 1, 1]),  # remainder one per stage, in file order
        ([0, 3, 0], 2, [0, 2, 0]),  # an ask of 0 gets 0
        ([8, 2], 5, [4, 1]),
        ([], 5, []),
    ],
)
def test_share(asks: list[int], budget: int, grants: list[int]) -> None:
    assert share(asks, budget) == grants


def test_example_pipeline_fits() -> None:
    spec = spec_of(
        stage("fetch", "producer"),
        stage("enrich", threads=4),
        stage("score", processes=2),
        stage("batch", "accumulator"),
        stage("store", "consumer"),
        max_threads=8,
    )
    got = run_allocate(spec)
    assert got.stages == {
        "fetch": StageAllocation(1, 0, 1, 0),
        "enrich": StageAllocation(4, 0, 4, 0),
        "score": StageAllocation(0, 2, 0, 2),
        "batch": StageAllocation(0, 0, 0, 0),
        "store": StageAllocation(1, 0, 1, 0),
    }
    assert got.cuts == [] and got.totals() == (6, 2)


def test_cut_explicit_threads_and_processes_only() -> None:
    spec = spec_of(
        stage("src", "producer"),
        stage("a", threads=6),
        stage("b", processes=4),
        stage("c", processes=2),
        stage("sink", "consumer"),
        max_threads=4,
        max_processes=3,
    )
    got = run_allocate(spec)
    # threads: asks 1, 6, 1 (total 8) in 4 → 0→1, 3, 0→1 ; processes: 4, 2 in 3 → 2, 1
    assert [got.stages[n].threads for n in ("src", "a", "sink")] == [1, 3, 1]
    assert [got.stages[n].processes for n in ("b", "c")] == [2, 1]
    assert got.cuts == [Cut("a", "threads", 6, 3), Cut("b", "processes", 4, 2), Cut("c", "processes", 2, 1)]
    assert got.cuts[0].what == "threads"
    assert 'stage "a" asked for 6 threads but got 3' in got.cuts[0].message()
    assert got.stages["a"].requested_threads == 6


def test_implicit_single_thread_is_never_a_cut() -> None:
    spec = spec_of(*(stage(f"s{i}") for i in range(4)), stage("sink", "consumer"), max_threads=2)
    got = run_allocate(spec)
    assert all(a.threads == 1 for a in got.stages.values())
    assert got.cuts == [] and got.totals() == (5, 0)  # at least one each, over the limit


def test_daemon_availability_lowers_the_budget() -> None:
    spec = spec_of(stage("src", "producer"), stage("a", threads=4), stage("sink", "consumer"), max_threads=10)
    assert run_allocate(spec, threads=None).stages["a"].threads == 4
    got = run_allocate(spec, threads=3)
    assert got.stages["a"].threads == 2 and got.cuts == [Cut("a", "threads", 4, 2)]  # 1·3/6 → 1, 4·3/6 = 2
    assert run_allocate(spec, threads=0).totals() == (3, 0)  # nothing left: still one each


def test_async_stage_counts_as_one_thread_and_keeps_its_concurrency() -> None:
    spec = spec_of(
        stage("src", "producer"),
        stage("fetch", threads=50),
        stage("b", threads=4),
        stage("sink", "consumer"),
        max_threads=6,
    )
    got = run_allocate(spec, is_async=lambda s: s.name == "fetch")
    assert got.stages["fetch"] == StageAllocation(50, 0, 50, 0, is_async=True)
    assert got.stages["b"].threads == 3  # asks 1 + 1 + 4 + 1 = 7 in 6
    assert got.cuts == [Cut("b", "threads", 4, 3)]
    assert got.totals() == (6, 0)


def test_nested_pipeline_budget_is_carved_out_of_its_parent() -> None:
    inner = stage(
        "inner",
        "pipeline",
        mode="parallel",
        max_threads=2,
        stages=(stage("x", threads=3), stage("y", threads=3), stage("z", processes=2)),
    )
    spec = spec_of(
        stage("src", "producer"), inner, stage("sink", "consumer"), max_threads=10, max_processes=2
    )
    got = run_allocate(spec)
    assert got.stages["inner"] == StageAllocation(0, 0, 0, 0)
    assert (got.stages["x"].threads, got.stages["y"].threads) == (1, 1)
    assert got.stages["z"].processes == 2
    assert Cut("x", "threads", 3, 1) in got.cuts and Cut("y", "threads", 3, 1) in got.cuts
    assert got.totals() == (4, 2)


def test_nested_pipeline_without_limits_shares_its_parents_budget() -> None:
    inner = stage("inner", "pipeline", stages=(stage("x", threads=4), stage("acc", "accumulator")))
    spec = spec_of(
        stage("src", "producer"), stage("a", threads=4), inner, stage("sink", "consumer"), max_threads=6
    )
    got = run_allocate(spec)
    # asks: src 1, a 4, inner 4, sink 1 = 10 in 6 → 1, 2, 2, 1 → remaining 0
    assert [got.stages[n].threads for n in ("src", "a", "x", "sink")] == [1, 2, 2, 1]
    assert got.stages["acc"] == StageAllocation(0, 0, 0, 0)


def test_pipeline_demand_is_capped_by_its_own_limits() -> None:
    spec = spec_of(stage("src", "producer"), stage("a", threads=4), stage("b", processes=3), max_threads=3)
    graph = build_graph(spec).graph
    assert pipeline_demand(spec, graph) == (3, 2)
    small = spec_of(stage("src", "producer"), stage("a"), max_threads=8)
    assert pipeline_demand(small, build_graph(small).graph) == (2, 0)


def test_daemon_budget_hands_out_what_remains_in_start_order() -> None:
    budget = DaemonBudget(max_threads=10, max_processes=3)
    assert budget.take("a", 6, 2) == (6, 2)
    assert budget.take("b", 6, 2) == (4, 1)
    assert budget.take("c", 2, 1) == (0, 0)
    assert budget.remaining() == (0, 0)
    budget.give_back("a")
    assert budget.held("b") == (4, 1)  # never rescaled
    assert budget.remaining() == (6, 2)
    assert budget.take("b", 5, 1) == (5, 1)  # taking again replaces its holding
    budget.hold("c", 2, 1)  # what c really uses (at least one each)
    assert budget.remaining() == (3, 1)
    budget.give_back("unknown")


def test_unlimited_daemon_budget() -> None:
    budget = DaemonBudget(None, None)
    assert budget.take("a", 100, 7) == (100, 7)
    assert budget.remaining() == (None, None)


def test_daemon_budget_is_thread_safe() -> None:
    budget = DaemonBudget(max_threads=100, max_processes=100)
    barrier = threading.Barrier(8)

    def take(i: int) -> None:
        barrier.wait()
        for j in range(50):
            budget.take(f"p{i}-{j}", 1, 1)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sum(sum(budget.held(f"p{i}-{j}")) for i in range(8) for j in range(50)) == 200
    assert budget.remaining() == (0, 0)


def test_the_daemon_budget_warns_once_when_the_at_least_one_rule_takes_it_past_its_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = DaemonBudget(max_threads=4, max_processes=None)
    with caplog.at_level(logging.WARNING, logger="pipelined.limits"):
        for i in range(5):  # each pipeline takes what is left, but uses 3 threads (one per stage)
            budget.take(f"p{i}", 3, 0)
            budget.hold(f"p{i}", 3, 0)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "use 6 threads, more than the daemon's max_threads = 4" in warnings[0] and "'p1'" in warnings[0]
    for i in range(5):
        budget.give_back(f"p{i}")
    assert budget.remaining() == (4, None)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelined.limits"):
        budget.take("again", 3, 0)
        budget.hold("again", 5, 0)  # past the limit again after falling back within it: warned again
    assert len(caplog.records) == 1 and "use 5 threads" in caplog.records[0].getMessage()
