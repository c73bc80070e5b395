"""Rendering: the api.md JSON shape, Mermaid structure, DOT that `dot` renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.graph.limits import Allocation, allocate
from pipelined.graph.model import Graph
from pipelined.graph.render import mermaid_id, render_dot, render_json, render_mermaid
from pipelined.graph.routing import build_graph


def stage(name: str, kind: str = "processor", **kw: object) -> StageSpec:
    return StageSpec(name=name, kind=kind, call=None if kind in ("accumulator", "pipeline") else "m:f", **kw)  # type: ignore[arg-type]


def spec_of(name: str, *stages: StageSpec, **kw: Any) -> PipelineSpec:
    return PipelineSpec(name=name, file=Path(f"/c/{name}.toml"), version="0" * 12, stages=stages, **kw)


ORDERS = spec_of(
    "orders",
    stage("fetch", "producer", auto_start=False),
    stage("enrich", threads=4),
    stage("score", processes=2),
    stage("batch", "accumulator"),
    stage("store", "consumer"),
    max_threads=8,
)
NESTED = spec_of(
    "nested-1",
    stage("src", "producer"),
    stage("end", threads=2),  # a Mermaid keyword as a stage name
    stage(
        "fan-out",
        "pipeline",
        mode="parallel",
        fanout="weighted",
        weights={"geo": 3, "a_b": 1, "deep": 2},
        stages=(
            stage("geo", processes=1),
            stage("a_b"),
            stage("deep", "pipeline", stages=(stage("x"), stage("y"))),
        ),
        to=("s-1", "s2"),
    ),
    stage("s-1", "consumer"),
    stage("s2", "consumer"),
    max_threads=10,
)
BROADCAST = spec_of(
    "bc",
    stage("src", "producer", to=("a", "b", "c"), fanout="broadcast"),
    stage("a", "consumer"),
    stage("b", "consumer"),
    stage("c", "consumer"),
)
ALL_SPECS = [ORDERS, NESTED, BROADCAST]


def graph_and_allocation(spec: PipelineSpec) -> tuple[Graph, Allocation]:
    result = build_graph(spec)
    assert result.ok, result.problems
    return result.graph, allocate(spec, result.graph, None, None)


# -- JSON ---------------------------------------------------------------------------------------
def test_json_matches_the_api_shape() -> None:
    data = render_json(*graph_and_allocation(ORDERS))
    assert data == {
        "nodes": [
            {"id": "fetch", "kind": "producer", "threads": 1, "processes": 0, "auto_start": False},
            {"id": "enrich", "kind": "processor", "threads": 4, "processes": 0, "auto_start": False},
            {"id": "score", "kind": "processor", "threads": 0, "processes": 2, "auto_start": False},
            {"id": "batch", "kind": "accumulator", "threads": 0, "processes": 0, "auto_start": False},
            {"id": "store", "kind": "consumer", "threads": 1, "processes": 0, "auto_start": False},
        ],
        "edges": [
            {"from": "fetch", "to": "enrich", "route": "direct"},
            {"from": "enrich", "to": "score", "route": "direct"},
            {"from": "score", "to": "batch", "route": "direct"},
            {"from": "batch", "to": "store", "route": "direct"},
        ],
    }
    assert orjson.loads(orjson.dumps(data)) == data


def test_json_producer_auto_start_and_effective_counts() -> None:
    spec = spec_of(
        "p", stage("src", "producer"), stage("a", threads=9), stage("sink", "consumer"), max_threads=3
    )
    nodes = {n["id"]: n for n in render_json(*graph_and_allocation(spec))["nodes"]}
    assert nodes["src"]["auto_start"] is True
    # asks 1, 9, 1 in 3 → floor(3/11) → 1, floor(27/11) = 2, 1 (at least one each)
    assert [nodes[n]["threads"] for n in ("src", "a", "sink")] == [1, 2, 1]
    assert nodes["sink"]["auto_start"] is False


def test_json_nested_children_hold_entrance_and_exit_edges() -> None:
    data = render_json(*graph_and_allocation(NESTED))
    top_ids = [n["id"] for n in data["nodes"]]
    assert top_ids == ["src", "end", "fan-out", "s-1", "s2"]
    assert {(e["from"], e["to"], e["route"]) for e in data["edges"]} == {
        ("src", "end", "direct"),
        ("end", "fan-out", "direct"),
        ("fan-out", "s-1", "round_robin"),
        ("fan-out", "s2", "round_robin"),
    }
    block = data["nodes"][2]
    assert block["kind"] == "pipeline" and (block["threads"], block["processes"]) == (0, 0)
    children = block["children"]
    assert [n["id"] for n in children["nodes"]] == ["geo", "a_b", "deep"]
    assert {(e["from"], e["to"], e["route"]) for e in children["edges"]} == {
        ("fan-out", "geo", "weighted"),
        ("fan-out", "a_b", "weighted"),
        ("fan-out", "deep", "weighted"),
        ("geo", "fan-out", "direct"),
        ("a_b", "fan-out", "direct"),
        ("deep", "fan-out", "direct"),
    }
    deep = children["nodes"][2]["children"]
    assert {(e["from"], e["to"]) for e in deep["edges"]} == {("deep", "x"), ("x", "y"), ("y", "deep")}
    assert all("children" not in n for n in children["nodes"][:2])
    assert set(data["nodes"][0]) == {"id", "kind", "threads", "processes", "auto_start"}


# -- Mermaid ------------------------------------------------------------------------------------
NODE = re.compile(
    r'^(?P<id>[A-Za-z][A-Za-z0-9_]*)(\(\["|\["|\[\("|\{\{"|\(\("|\[/")(?P<label>[^"]*)("\]\)|"\]|"\)\]|"\}\}|"\)\)|"/\])$'
)
SUBGRAPH = re.compile(r'^subgraph (?P<id>[A-Za-z][A-Za-z0-9_]*) \["(?P<label>[^"]*)"\]$')
EDGE = re.compile(
    r"^(?P<src>[A-Za-z][A-Za-z0-9_]*) (-->|-\.->)(\|(?P<label>[^|\"]+)\|)? (?P<dst>[A-Za-z][A-Za-z0-9_]*)$"
)  # -.-> : a link between pipelines (the daemon-wide graph)
RESERVED = {
    "end",
    "subgraph",
    "graph",
    "flowchart",
    "style",
    "class",
    "classDef",
    "click",
    "direction",
    "linkStyle",
}


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str | None]], list[str]]:
    """A strict reader of the subset render_mermaid writes: node labels, edges, subgraph ids."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str | None]] = []
    open_subgraphs: list[str] = []
    subgraphs: list[str] = []
    for raw in lines[1:]:
        line = raw.strip()
        if m := SUBGRAPH.match(line):
            # Mermaid lays a subgraph out with room for one title line: a second would cover stages
            assert "<br" not in m["label"], f"multi-line subgraph title: {raw!r}"
            open_subgraphs.append(m["id"])
            subgraphs.append(m["id"])
        elif line == "end":
            assert open_subgraphs, "end without subgraph"
            open_subgraphs.pop()
        elif line == "direction LR":
            assert open_subgraphs
        elif m := NODE.match(line):
            assert m["id"] not in nodes, f"node defined twice: {m['id']}"
            nodes[m["id"]] = m["label"]
        elif m := EDGE.match(line):
            edges.append((m["src"], m["dst"], m["label"]))
        else:
            raise AssertionError(f"unexpected Mermaid line: {raw!r}")
    assert not open_subgraphs, "unclosed subgraph"
    for node_id in [*nodes, *subgraphs]:
        assert node_id not in RESERVED and not node_id.lower().startswith(("o", "x", "end"))
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes, (src, dst)
    return nodes, edges, subgraphs


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_mermaid_structure(spec: PipelineSpec) -> None:
    graph, allocation = graph_and_allocation(spec)
    nodes, edges, subgraphs = parse_mermaid(render_mermaid(graph, allocation))
    assert len(edges) == len(graph.edges)
    assert len(subgraphs) == sum(1 for n in graph.nodes if n.kind == "pipeline")
    for edge, (_, _, label) in zip(graph.edges, edges, strict=True):
        assert (label is None) == (edge.route == "direct")
        if label is not None:
            assert label.startswith(edge.route)


def test_mermaid_labels_shapes_and_ids() -> None:
    text = render_mermaid(*graph_and_allocation(ORDERS))
    assert 'st_enrich["enrich<br/>processor · 4 threads"]' in text
    assert 'st_fetch(["fetch<br/>producer · 1 thread · on trigger"])' in text
    assert 'st_score["score<br/>processor · 2 processes"]' in text
    assert 'st_batch{{"batch<br/>accumulator"}}' in text
    assert 'st_store[("store<br/>consumer · 1 thread")]' in text
    nested = render_mermaid(*graph_and_allocation(NESTED))
    assert "st_end[" in nested
    assert f'subgraph {mermaid_id("fan-out", "sg")} ["fan-out · pipeline · parallel"]' in nested
    assert f'subgraph {mermaid_id("deep", "sg")} ["deep · pipeline · sequential"]' in nested
    assert f"{mermaid_id('fan-out', 'in')} -->|weighted 3| st_geo" in nested
    assert f"{mermaid_id('fan-out', 'ex')} -->|round_robin| {mermaid_id('s-1')}" in nested
    assert "-->|broadcast|" in render_mermaid(*graph_and_allocation(BROADCAST))


def test_mermaid_ids_are_injective_and_safe() -> None:
    names = ["a-b", "a_b", "a_2d_b", "a__b", "end", "A", "a", "x-", "_x"]
    ids = [mermaid_id(n) for n in names]
    assert len(set(ids)) == len(names)
    assert all(re.fullmatch(r"st_[A-Za-z0-9_]+", i) for i in ids)


# -- DOT ----------------------------------------------------------------------------------------
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")


def dot_json(text: str) -> dict[str, Any]:
    done = subprocess.run(
        ["dot", "-Tjson"], input=text.encode(), capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return orjson.loads(done.stdout)


@needs_dot
@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_dot_renders_to_svg(spec: PipelineSpec) -> None:
    text = render_dot(*graph_and_allocation(spec))
    done = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert b"<svg" in done.stdout and not done.stderr


@needs_dot
def test_dot_structure_has_clusters_nodes_and_edges() -> None:
    graph, allocation = graph_and_allocation(NESTED)
    parsed = dot_json(render_dot(graph, allocation))
    objects = parsed["objects"]
    clusters = {o["name"] for o in objects if o["name"].startswith("cluster")}
    assert clusters == {"cluster:fan-out", "cluster:deep"}
    names = [o["name"] for o in objects]
    stage_ids = {f"s:{n.id}" for n in graph.nodes if n.kind != "pipeline"}
    assert stage_ids <= set(names)
    pairs = {(names[e["tail"]], names[e["head"]], e.get("label") or None) for e in parsed["edges"]}
    assert ("i:fan-out", "s:geo", "weighted 3") in pairs
    assert ("o:fan-out", "s:s-1", "round_robin") in pairs
    assert ("s:end", "i:fan-out", None) in pairs and ("s:y", "o:deep", None) in pairs
    assert len(pairs) == len(graph.edges)
    by_name = {o["name"]: o for o in objects}
    assert by_name["s:end"]["label"] == "end\\nprocessor · 2 threads"


def test_dot_quotes_names() -> None:
    spec = spec_of('we"ird', stage("src", "producer"), stage("sink", "consumer"))
    text = render_dot(*graph_and_allocation(spec))
    assert text.startswith('digraph "we\\"ird" {')
