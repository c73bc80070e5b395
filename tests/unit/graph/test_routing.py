"""Routing rules 1-6 (flat pipelines): implicit and explicit edges, fan-out routes, every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelined.config.spec import PipelineSpec, Problem, StageSpec
from pipelined.graph.model import GraphResult
from pipelined.graph.routing import build_graph

FILE = Path("/etc/pipelined/conf.d/orders.toml")


def stage(name: str, kind: str = "processor", **kw: object) -> StageSpec:
    return StageSpec(name=name, kind=kind, call=None if kind == "accumulator" else "m:f", **kw)  # type: ignore[arg-type]


def build(*stages: StageSpec) -> GraphResult:
    lined = tuple(
        s if s.line is not None else StageSpec(**{**s.__dict__, "line": 10 * (i + 1)})
        for i, s in enumerate(stages)
    )
    return build_graph(PipelineSpec(name="orders", file=FILE, version="0" * 12, stages=lined))


def edges(result: GraphResult) -> set[tuple[str, str, str]]:
    return {(e.src, e.dst, e.route) for e in result.graph.edges}


def errors(result: GraphResult) -> list[Problem]:
    return [p for p in result.problems if p.severity == "error"]


def warnings(result: GraphResult) -> list[Problem]:
    return [p for p in result.problems if p.severity == "warning"]


def only_problem(result: GraphResult, severity: str = "error") -> Problem:
    found = [p for p in result.problems if p.severity == severity]
    assert len(found) == 1, found
    return found[0]


# -- implicit edges (rule 1) --------------------------------------------------------------------
def test_chain_is_linked_in_file_order_with_direct_routes() -> None:
    result = build(
        stage("fetch", "producer"), stage("enrich"), stage("batch", "accumulator"), stage("store", "consumer")
    )
    assert result.ok and result.problems == ()
    assert [e.src for e in result.graph.edges] == ["fetch", "enrich", "batch"]
    assert edges(result) == {
        ("fetch", "enrich", "direct"),
        ("enrich", "batch", "direct"),
        ("batch", "store", "direct"),
    }
    assert [n.id for n in result.graph.nodes] == ["fetch", "enrich", "batch", "store"]
    assert all(n.parent is None for n in result.graph.nodes)


def test_consecutive_producers_fan_in_to_the_next_non_producer() -> None:
    result = build(stage("p1", "producer"), stage("p2", "producer"), stage("work"), stage("sink", "consumer"))
    assert result.ok and result.problems == ()
    assert edges(result) == {("p1", "work", "direct"), ("p2", "work", "direct"), ("work", "sink", "direct")}
    assert set(result.graph.upstream("work")) == {"p1", "p2"}


def test_producer_later_in_the_file_is_skipped_by_implicit_edges() -> None:
    result = build(stage("p1", "producer"), stage("a"), stage("p2", "producer"), stage("sink", "consumer"))
    assert result.ok
    assert edges(result) == {("p1", "a", "direct"), ("a", "sink", "direct"), ("p2", "sink", "direct")}


def test_consumer_has_no_implicit_outgoing_edge() -> None:
    result = build(stage("src", "producer"), stage("log", "consumer"), stage("store", "consumer"))
    assert result.ok
    assert edges(result) == {("src", "log", "direct")}
    warning = only_problem(result, "warning")
    assert warning.where == "orders/store" and warning.line == 30 and warning.file == str(FILE)
    assert "no stage sends to" in warning.message


def test_last_non_consumer_stage_is_terminal_warning() -> None:
    result = build(stage("src", "producer"), stage("a"))
    assert result.ok
    warning = only_problem(result, "warning")
    assert warning.where == "orders/a" and "outputs are discarded" in warning.message


# -- explicit edges (rule 2) --------------------------------------------------------------------
def test_spec_example_from_replaces_incoming_edge_only() -> None:
    result = build(
        stage("src", "producer"), stage("a"), stage("b", from_=("src",)), stage("sink", "consumer")
    )
    assert result.ok
    assert edges(result) == {
        ("src", "a", "round_robin"),
        ("src", "b", "round_robin"),
        ("b", "sink", "direct"),
    }
    warning = only_problem(result, "warning")
    assert warning.where == "orders/a" and "outputs are discarded" in warning.message


def test_to_replaces_the_implicit_outgoing_edge() -> None:
    result = build(stage("src", "producer", to=("c",)), stage("b"), stage("c", "consumer"))
    assert edges(result) == {("src", "c", "direct"), ("b", "c", "direct")}
    assert "no stage sends to" in only_problem(result, "warning").message


def test_edge_declared_by_both_ends_exists_once() -> None:
    result = build(
        stage("src", "producer", to=("b",)), stage("a"), stage("b", from_=("src",)), stage("sink", "consumer")
    )
    assert [(e.src, e.dst) for e in result.graph.edges].count(("src", "b")) == 1
    assert ("src", "b", "direct") in edges(result)


def test_from_several_upstreams_fans_in() -> None:
    result = build(
        stage("p1", "producer", to=("a",)),
        stage("p2", "producer", to=("b",)),
        stage("a", to=("sink",)),
        stage("b"),
        stage("sink", "consumer", from_=("a", "b")),
    )
    assert result.ok and result.problems == ()
    assert set(result.graph.upstream("sink")) == {"a", "b"}


# -- fan-out routes (rule 3) --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fanout", "weights", "route"),
    [
        (None, None, "round_robin"),
        ("round_robin", None, "round_robin"),
        ("broadcast", None, "broadcast"),
        ("weighted", {"a": 3, "b": 1}, "weighted"),
    ],
)
def test_fanout_route_of_every_edge_of_the_source(
    fanout: str | None, weights: dict[str, int] | None, route: str
) -> None:
    result = build(
        stage("src", "producer", to=("a", "b"), fanout=fanout, weights=weights),
        stage("a", "consumer"),
        stage("b", "consumer"),
    )
    assert result.ok and result.problems == ()
    assert edges(result) == {("src", "a", route), ("src", "b", route)}


def test_fanout_with_a_single_downstream_is_direct() -> None:
    result = build(stage("src", "producer", fanout="broadcast"), stage("sink", "consumer"))
    assert edges(result) == {("src", "sink", "direct")}


# -- errors (rule 6) ----------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["to", "from"])
def test_unknown_stage_in_to_or_from_with_suggestion(key: str) -> None:
    ref: dict[str, object] = {"to": ("stroe",)} if key == "to" else {"from_": ("stroe",)}
    result = build(stage("src", "producer"), stage("a", "processor", **ref), stage("store", "consumer"))
    problem = next(p for p in errors(result) if "unknown stage" in p.message)
    assert problem.where == f"orders/a/{key}" and problem.line == 20 and problem.file == str(FILE)
    assert '"stroe"' in problem.message and 'did you mean "store"' in problem.message
    assert str(problem).startswith(f"{FILE}:20: orders/a/{key}: unknown stage")


def test_cycle_names_the_stages_on_it() -> None:
    result = build(
        stage("src", "producer"),
        stage("a"),
        stage("b"),
        stage("c", to=("a",)),
        stage("sink", "consumer", from_=("b",)),
    )
    problem = only_problem(result)
    assert problem.message == "cycle: a -> b -> c -> a"
    assert problem.where == "orders/a"


def test_self_loop_is_a_cycle() -> None:
    result = build(stage("src", "producer"), stage("a", to=("a", "sink")), stage("sink", "consumer"))
    assert only_problem(result).message == "cycle: a -> a"


def test_edge_into_a_producer_is_an_error_and_left_out() -> None:
    result = build(stage("src", "producer"), stage("a", to=("src",)), stage("sink", "consumer"))
    problem = errors(result)[0]
    assert problem.where == "orders/a/to" and '"src" is a producer' in problem.message
    assert ("a", "src") not in {(e.src, e.dst) for e in result.graph.edges}


def test_producer_with_from_is_an_error() -> None:
    result = build(stage("a"), stage("src", "producer", from_=("a",)), stage("sink", "consumer"))
    problem = next(p for p in errors(result) if p.where == "orders/src/from")
    assert "cannot receive" in problem.message


def test_edge_out_of_a_consumer_is_an_error_both_ways() -> None:
    by_to = build(stage("src", "producer"), stage("log", "consumer", to=("sink",)), stage("sink", "consumer"))
    assert '"log" is a consumer' in only_problem(by_to).message
    assert only_problem(by_to).where == "orders/log/to"
    by_from = build(
        stage("src", "producer"), stage("log", "consumer"), stage("sink", "consumer", from_=("log",))
    )
    assert only_problem(by_from).where == "orders/sink/from"
    assert edges(by_from) == {("src", "log", "direct")}


def test_duplicate_names_are_reported_at_the_second() -> None:
    result = build(stage("src", "producer"), stage("a"), stage("a"), stage("sink", "consumer"))
    problem = only_problem(result)
    assert problem.where == "orders/a" and problem.line == 30
    assert "duplicate stage name" in problem.message and "line 20" in problem.message
    assert [n.id for n in result.graph.nodes] == ["src", "a", "sink"]


def test_weighted_without_weights() -> None:
    result = build(
        stage("src", "producer", to=("a", "b"), fanout="weighted"),
        stage("a", "consumer"),
        stage("b", "consumer"),
    )
    problem = only_problem(result)
    assert problem.where == "orders/src/fanout" and "needs weights" in problem.message


def test_weights_key_that_is_not_downstream_or_unknown() -> None:
    result = build(
        stage("src", "producer", to=("a", "b"), fanout="weighted", weights={"a": 1, "b": 1, "c": 2, "zz": 1}),
        stage("a", "consumer"),
        stage("b", "consumer"),
        stage("c", "consumer"),
    )
    messages = {p.message for p in errors(result) if p.where == "orders/src/weights"}
    assert '"c" is not a downstream stage of "src" (downstream: a, b)' in messages
    assert any('"zz" unknown stage' in m for m in messages)


def test_weights_missing_a_downstream_or_not_positive() -> None:
    result = build(
        stage("src", "producer", to=("a", "b"), fanout="weighted", weights={"a": 0}),
        stage("a", "consumer"),
        stage("b", "consumer"),
    )
    messages = sorted(p.message for p in errors(result))
    assert messages == [
        'no weight for downstream stage "b"',
        'weight of "a" must be a positive integer, got 0',
    ]


def test_weights_without_weighted_fanout_is_a_warning() -> None:
    result = build(
        stage("src", "producer", to=("a", "b"), weights={"a": 1, "b": 2}),
        stage("a", "consumer"),
        stage("b", "consumer"),
    )
    assert result.ok
    assert only_problem(result, "warning").where == "orders/src/weights"


def test_producer_with_no_downstream_is_an_error() -> None:
    result = build(stage("a"), stage("sink", "consumer"), stage("src", "producer"))
    problem = only_problem(result)
    assert problem.where == "orders/src" and problem.line == 30 and "no downstream" in problem.message


def test_problems_print_with_file_line_and_where() -> None:
    result = build(stage("src", "producer"), stage("a", to=("nope",)))
    assert any(str(p).startswith(f"{FILE}:20: orders/a/to: ") for p in result.problems)
    assert not result.ok
