"""Property tests: random pipelines against an independent reading of routing rules 1-2 and 6."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.graph.model import Graph, GraphResult
from pipelined.graph.routing import build_graph

FLAT_KINDS = ("producer", "processor", "consumer", "accumulator")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_of(stages: tuple[StageSpec, ...]) -> PipelineSpec:
    return PipelineSpec(name="prop", file=Path("/c/prop.toml"), version="0" * 12, stages=stages)


@st.composite
def flat_stages(draw: Callable[..., Any]) -> tuple[StageSpec, ...]:
    count = draw(st.integers(1, 8))
    names = [f"s{i}" for i in range(count)]
    refs = st.none() | st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True).map(tuple)
    return tuple(
        StageSpec(
            name=name,
            kind=draw(st.sampled_from(FLAT_KINDS)),
            to=draw(refs),
            from_=draw(refs),
            fanout=draw(st.sampled_from([None, "round_robin", "broadcast"])),
            line=i + 1,
        )
        for i, name in enumerate(names)
    )


def expected_edges(stages: tuple[StageSpec, ...]) -> set[tuple[str, str]]:
    """Rules 1-2 read independently: implicit edges plus the declared ones that break no rule."""
    kind = {s.name: s.kind for s in stages}
    found: set[tuple[str, str]] = set()
    for i, src in enumerate(stages):
        if src.kind != "consumer" and src.to is None:
            following = [s for s in stages[i + 1 :] if s.kind != "producer"]
            if following and following[0].from_ is None:
                found.add((src.name, following[0].name))
        if src.kind != "consumer":
            found |= {(src.name, dst) for dst in src.to or () if kind[dst] != "producer"}
        if src.kind != "producer":
            found |= {(up, src.name) for up in src.from_ or () if kind[up] != "consumer"}
    return found


def has_cycle(nodes: list[str], edges: set[tuple[str, str]]) -> bool:
    indegree = {n: 0 for n in nodes}
    for _, dst in edges:
        indegree[dst] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for src, dst in edges:
            if src == node:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    return seen < len(nodes)


def without_exit_edges(graph: Graph) -> set[tuple[str, str]]:
    return {(e.src, e.dst) for e in graph.edges if not graph.is_ancestor(e.dst, e.src)}


def check_kind_rules(result: GraphResult) -> None:
    graph = result.graph
    for edge in graph.edges:
        assert graph.node(edge.dst).kind != "producer", edge
        assert graph.node(edge.src).kind != "consumer", edge


@SETTINGS
@given(flat_stages())
def test_flat_graph_follows_rules(stages: tuple[StageSpec, ...]) -> None:
    result = build_graph(spec_of(stages))
    graph = result.graph
    pairs = {(e.src, e.dst) for e in graph.edges}
    assert len(pairs) == len(graph.edges)  # an edge declared twice exists once
    assert pairs == expected_edges(stages)
    check_kind_rules(result)
    cyclic = has_cycle([s.name for s in stages], pairs)
    assert cyclic == any(p.message.startswith("cycle: ") for p in result.problems)
    if result.ok:
        assert not cyclic
    for s in stages:
        outs = graph.out_edges(s.name)
        if s.kind == "producer" and not outs:
            assert any(p.where == f"prop/{s.name}" and "no downstream" in p.message for p in result.problems)
        for edge in outs:
            assert edge.route == ("direct" if len(outs) == 1 else s.effective_fanout)


@st.composite
def nested_stages(draw: Callable[..., Any]) -> tuple[StageSpec, ...]:
    counter = iter(range(1000))

    def level(depth: int) -> tuple[StageSpec, ...]:
        size = draw(st.integers(1, 4))
        kinds = [
            draw(st.sampled_from((*FLAT_KINDS, "pipeline") if depth < 2 else FLAT_KINDS)) for _ in range(size)
        ]
        names = [f"n{next(counter)}" for _ in kinds]
        built = []
        for name, kind in zip(names, kinds, strict=True):
            later = names[names.index(name) + 1 :]
            to = (
                draw(
                    st.none()
                    | st.lists(st.sampled_from(later), min_size=1, max_size=2, unique=True).map(tuple)
                )
                if later
                else None
            )
            children = level(depth + 1) if kind == "pipeline" else ()
            mode = draw(st.sampled_from(["sequential", "parallel"]))
            built.append(StageSpec(name=name, kind=kind, to=to, stages=children, mode=mode))  # type: ignore[arg-type]
        return tuple(built)

    return level(0)


@SETTINGS
@given(nested_stages())
def test_nested_graph_invariants(stages: tuple[StageSpec, ...]) -> None:
    result = build_graph(spec_of(stages))
    graph = result.graph
    check_kind_rules(result)
    assert [n.id for n in graph.nodes] == [s.name for s in spec_of(stages).walk()]
    assert not has_cycle([n.id for n in graph.nodes], without_exit_edges(graph))  # to only points forward
    for edge in graph.edges:
        src, dst = graph.node(edge.src), graph.node(edge.dst)
        sibling = src.parent == dst.parent
        entering = dst.parent == src.id
        leaving_block = src.parent == dst.id
        assert sibling or entering or leaving_block, edge
    for node in graph.nodes:
        if node.kind != "pipeline":
            continue
        entrance = graph.entrance(node.id)
        if not entrance:
            assert any(p.where == f"prop/{node.id}" and "no entry" in p.message for p in result.problems)
        for edge in entrance:
            expected = "direct" if len(entrance) == 1 else node.stage.effective_fanout
            assert edge.route == expected
        leaving = [e for e in graph.out_edges(node.id) if e not in entrance]
        assert all(e.route == ("direct" if len(leaving) == 1 else "round_robin") for e in leaving)
        if node.stage.mode == "sequential":
            assert len(entrance) <= 1
        if result.ok:
            assert entrance
