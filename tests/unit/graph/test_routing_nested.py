"""Nested pipelines: flattened nodes, entrance/exit edges, modes, levels of to/from."""

from __future__ import annotations

from pathlib import Path

from pipelined.config.spec import PipelineSpec, Problem, StageSpec
from pipelined.graph.model import GraphResult
from pipelined.graph.routing import build_graph

FILE = Path("/conf.d/nested.toml")


def stage(name: str, kind: str = "processor", **kw: object) -> StageSpec:
    return StageSpec(name=name, kind=kind, call=None if kind in ("accumulator", "pipeline") else "m:f", **kw)  # type: ignore[arg-type]


def block(name: str, *children: StageSpec, **kw: object) -> StageSpec:
    return stage(name, "pipeline", stages=children, **kw)


def build(*stages: StageSpec) -> GraphResult:
    return build_graph(PipelineSpec(name="nested", file=FILE, version="0" * 12, stages=stages))


def edges(result: GraphResult) -> set[tuple[str, str, str]]:
    return {(e.src, e.dst, e.route) for e in result.graph.edges}


def errors(result: GraphResult) -> list[Problem]:
    return [p for p in result.problems if p.severity == "error"]


def test_sequential_block_chains_children_between_entrance_and_exit() -> None:
    result = build(
        stage("src", "producer"),
        block("clean", stage("strip"), stage("lower")),
        stage("sink", "consumer"),
    )
    assert result.ok and result.problems == ()
    assert [(n.id, n.parent) for n in result.graph.nodes] == [
        ("src", None),
        ("clean", None),
        ("strip", "clean"),
        ("lower", "clean"),
        ("sink", None),
    ]
    assert edges(result) == {
        ("src", "clean", "direct"),
        ("clean", "strip", "direct"),
        ("strip", "lower", "direct"),
        ("lower", "clean", "direct"),
        ("clean", "sink", "direct"),
    }
    graph = result.graph
    assert [e.dst for e in graph.entrance("clean")] == ["strip"]
    assert [e.src for e in graph.exit_edges("clean")] == ["lower"]
    assert graph.downstream("clean") == ("sink",) and graph.upstream("clean") == ("src",)


def test_parallel_block_broadcasts_to_every_child_and_collects_every_exit() -> None:
    result = build(
        stage("src", "producer"),
        block("enrich", stage("geo"), stage("fraud"), stage("audit", "consumer"), mode="parallel"),
        stage("sink", "consumer"),
    )
    assert result.ok and result.problems == ()
    assert edges(result) == {
        ("src", "enrich", "direct"),
        ("enrich", "geo", "broadcast"),
        ("enrich", "fraud", "broadcast"),
        ("enrich", "audit", "broadcast"),
        ("geo", "enrich", "direct"),
        ("fraud", "enrich", "direct"),
        ("enrich", "sink", "direct"),
    }


def test_parallel_block_fanout_and_weights_govern_its_entrance() -> None:
    result = build(
        stage("src", "producer"),
        block("split", stage("a"), stage("b"), mode="parallel", fanout="weighted", weights={"a": 2, "b": 1}),
        stage("sink", "consumer"),
    )
    assert result.ok and result.problems == ()
    assert {(s, d, r) for s, d, r in edges(result) if s == "split"} == {
        ("split", "a", "weighted"),
        ("split", "b", "weighted"),
        ("split", "sink", "direct"),
    }
    bad = build(
        stage("src", "producer"),
        block("split", stage("a"), stage("b"), mode="parallel", fanout="weighted", weights={"sink": 1}),
        stage("sink", "consumer"),
    )
    assert {p.where for p in errors(bad)} == {"nested/split/weights"}


def test_parallel_children_with_to_and_from_are_not_exits_and_entries() -> None:
    result = build(
        stage("src", "producer"),
        block("par", stage("a", to=("b",)), stage("b", from_=("a",)), stage("c"), mode="parallel"),
        stage("sink", "consumer"),
    )
    assert result.ok and result.problems == ()
    graph = result.graph
    assert {e.dst for e in graph.entrance("par")} == {"a", "c"}
    assert {e.src for e in graph.exit_edges("par")} == {"b", "c"}
    assert ("a", "b", "direct") in edges(result)


def test_exit_to_several_downstreams_is_round_robin() -> None:
    result = build(
        stage("src", "producer"),
        block("inner", stage("x"), fanout="broadcast", to=("s1", "s2")),
        stage("s1", "consumer"),
        stage("s2", "consumer"),
    )
    assert result.ok
    assert {(s, d, r) for s, d, r in edges(result) if s == "inner"} == {
        ("inner", "x", "direct"),
        ("inner", "s1", "round_robin"),
        ("inner", "s2", "round_robin"),
    }


def test_from_naming_the_enclosing_block_is_an_error() -> None:
    result = build(
        stage("src", "producer"),
        block("seq", stage("a", to=("c",)), stage("b", from_=("seq",)), stage("c")),
        stage("sink", "consumer"),
    )
    problem = next(p for p in errors(result))
    assert problem.where == "nested/b/from"
    assert "to/from can only name stages at the same level" in problem.message


def test_name_from_another_level_is_an_error_that_says_so() -> None:
    result = build(
        stage("src", "producer"),
        block("inner", stage("x", to=("sink",))),
        stage("sink", "consumer", from_=("x",)),
    )
    messages = {p.where: p.message for p in errors(result)}
    assert (
        '"sink" is a stage of the top level, but "x" is in nested pipeline "inner"' in messages["nested/x/to"]
    )
    assert (
        '"x" is a stage of nested pipeline "inner", but "sink" is in the top level'
        in messages["nested/sink/from"]
    )


def test_block_of_consumers_sends_nothing_on() -> None:
    result = build(
        stage("src", "producer"),
        block("sinks", stage("db", "consumer"), stage("log", "consumer"), mode="parallel"),
        stage("after"),
    )
    assert edges(result) == {
        ("src", "sinks", "direct"),
        ("sinks", "db", "broadcast"),
        ("sinks", "log", "broadcast"),
    }
    assert [p.where for p in result.problems] == ["nested/after", "nested/after"]  # unreachable + terminal
    to_block = build(
        stage("src", "producer"),
        block("sinks", stage("db", "consumer"), to=("after",)),
        stage("after", "consumer"),
    )
    assert any(
        "sends nothing downstream" in p.message and p.where == "nested/sinks/to" for p in errors(to_block)
    )


def test_block_without_entry_is_an_error() -> None:
    result = build(
        stage("src", "producer"),
        block("inner", stage("gen", "producer"), stage("x", from_=("gen",))),
        stage("sink", "consumer"),
    )
    problem = next(p for p in errors(result) if p.where == "nested/inner")
    assert "no entry stage" in problem.message


def test_cycle_inside_a_block_and_duplicate_name_across_levels() -> None:
    result = build(
        stage("src", "producer"),
        block("inner", stage("a"), stage("b", to=("a",)), stage("src")),
        stage("sink", "consumer"),
    )
    messages = [p.message for p in errors(result)]
    assert "cycle: a -> b -> a" in messages
    assert any(m.startswith('duplicate stage name "src"') for m in messages)


def test_deeply_nested_blocks_flatten_with_parents() -> None:
    result = build(
        stage("src", "producer"),
        block("outer", stage("a"), block("mid", stage("b"), stage("c"), mode="parallel"), stage("d")),
        stage("sink", "consumer"),
    )
    assert result.ok and result.problems == ()
    parents = {n.id: n.parent for n in result.graph.nodes}
    assert parents == {
        "src": None,
        "outer": None,
        "a": "outer",
        "mid": "outer",
        "b": "mid",
        "c": "mid",
        "d": "outer",
        "sink": None,
    }
    assert ("a", "mid", "direct") in edges(result) and ("mid", "d", "direct") in edges(result)
    assert result.graph.is_ancestor("outer", "b")
    assert {e.src for e in result.graph.exit_edges("mid")} == {"b", "c"}
