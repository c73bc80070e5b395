"""A pipeline's graph → JSON (api.md Graph shape), Mermaid `flowchart LR`, Graphviz `digraph`.

JSON: `{"nodes": [...], "edges": [...]}` for the top level; each node is
`{"id", "kind", "threads", "processes", "auto_start"}` where threads/processes are the effective
counts of `limits.Allocation` (a stage in worker processes has threads 0, a stage in threads has
processes 0, accumulators and nested containers 0/0). `auto_start` is the producer's setting;
it is `false` for every other kind (only producers start on their own), so the field is always
a bool. A nested pipeline is a node with `"kind": "pipeline"` and
`"children": {"nodes": [...], "edges": [...]}`; its children's edges include `N -> entry`
(its entrance) and `exit -> N` (its exit); the parent's edges end at `N`.

Mermaid and DOT draw a nested pipeline as a subgraph/cluster holding its stages plus two small
`in`/`out` nodes: edges to `N` end at its `in`, edges from `N` start at its `out`. A Mermaid
subgraph title is one line (`N · pipeline · mode`): Mermaid leaves room for one, a second line
is drawn over the stages. Node ids are
prefixed and escaped (`st_`, `in_`, `ex_`, `sg_` in Mermaid; `s:`, `i:`, `o:` in DOT) so stage
names such as `end` or `a-b` never clash with the syntax.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipelined.graph.limits import Allocation, StageAllocation
from pipelined.graph.model import Edge, Graph, Node

_NONE = StageAllocation(0, 0, 0, 0)

_MERMAID_SHAPES = {
    "producer": ('(["', '"])'),
    "processor": ('["', '"]'),
    "consumer": ('[("', '")]'),
    "accumulator": ('{{"', '"}}'),
}
_MERMAID_PREFIX = {"s": "st", "i": "in", "o": "ex"}  # never a leading o/x: `--o`/`--x` are arrows
_DOT_SHAPES = {"producer": "invhouse", "processor": "box", "consumer": "cylinder", "accumulator": "hexagon"}


# -- shared ------------------------------------------------------------------------------------
def edge_level(graph: Graph, edge: Edge) -> str | None:
    """The nested pipeline whose `children` list this edge (None: the top level)."""
    if graph.node(edge.dst).parent == edge.src:  # entrance: N -> entry
        return edge.src
    if graph.node(edge.src).parent == edge.dst:  # exit: exit -> N
        return edge.dst
    return graph.node(edge.src).parent


def _workers(node: Node, allocation: Allocation) -> str:
    """`processor · 4 threads`, `producer · 1 thread · on trigger`, `accumulator`, ..."""
    got = allocation.stages.get(node.id, _NONE)
    parts = [node.kind]
    if node.kind == "pipeline":
        parts.append(node.stage.mode)
    elif got.processes:
        parts.append(f"{got.processes} process" + ("es" if got.processes != 1 else ""))
    elif got.is_async:
        parts.append(f"async · {got.threads} concurrent")
    elif got.threads:
        parts.append(f"{got.threads} thread" + ("s" if got.threads != 1 else ""))
    if node.kind == "producer" and not node.stage.auto_start:
        parts.append("on trigger")
    return " · ".join(parts)


def _edge_label(graph: Graph, edge: Edge) -> str:
    if edge.route != "weighted":
        return edge.route
    weights = graph.node(edge.src).stage.weights or {}
    weight = weights.get(edge.dst)
    return f"weighted {weight}" if weight is not None else "weighted"


# -- JSON --------------------------------------------------------------------------------------
def render_json(graph: Graph, allocation: Allocation) -> dict[str, Any]:
    """The api.md Graph object (nested pipelines carry `children`)."""
    return _json_level(graph, allocation, None)


def _json_level(graph: Graph, allocation: Allocation, parent: str | None) -> dict[str, Any]:
    nodes = [_json_node(graph, allocation, node) for node in graph.children(parent)]
    edges = [
        {"from": e.src, "to": e.dst, "route": e.route} for e in graph.edges if edge_level(graph, e) == parent
    ]
    return {"nodes": nodes, "edges": edges}


def _json_node(graph: Graph, allocation: Allocation, node: Node) -> dict[str, Any]:
    got = allocation.stages.get(node.id, _NONE)
    data: dict[str, Any] = {
        "id": node.id,
        "kind": node.kind,
        "threads": got.threads if node.kind != "pipeline" else 0,
        "processes": got.processes if node.kind != "pipeline" else 0,
        "auto_start": bool(node.stage.auto_start) if node.kind == "producer" else False,
    }
    if node.kind == "pipeline":
        data["children"] = _json_level(graph, allocation, node.id)
    return data


# -- Mermaid -----------------------------------------------------------------------------------
def mermaid_id(name: str, prefix: str = "st") -> str:
    """A Mermaid-safe, injective id: letters and digits kept, `_` doubled, others `_<hex>_`."""
    out = []
    for char in name:
        if char.isascii() and char.isalnum():
            out.append(char)
        elif char == "_":
            out.append("__")
        else:
            out.append(f"_{ord(char):x}_")
    return f"{prefix}_{''.join(out)}"


def _mermaid_text(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def render_mermaid(graph: Graph, allocation: Allocation) -> str:
    lines = ["flowchart LR"]
    lines.extend(_mermaid_level(graph, allocation, None, "  "))
    for edge in graph.edges:
        src, dst = _endpoints(graph, edge)
        arrow = "-->" if edge.route == "direct" else f"-->|{_mermaid_text(_edge_label(graph, edge))}|"
        lines.append(
            f"  {mermaid_id(src[1], _MERMAID_PREFIX[src[0]])} {arrow} {mermaid_id(dst[1], _MERMAID_PREFIX[dst[0]])}"
        )
    return "\n".join(lines) + "\n"


def _endpoints(graph: Graph, edge: Edge) -> tuple[tuple[str, str], tuple[str, str]]:
    """(prefix, name) of both ends: a nested pipeline is entered at `i_` and left from `o_`."""
    src_node, dst_node = graph.node(edge.src), graph.node(edge.dst)
    if src_node.kind == "pipeline":
        src = ("i", edge.src) if dst_node.parent == edge.src else ("o", edge.src)
    else:
        src = ("s", edge.src)
    if dst_node.kind == "pipeline":
        dst = ("o", edge.dst) if src_node.parent == edge.dst else ("i", edge.dst)
    else:
        dst = ("s", edge.dst)
    return src, dst


def _mermaid_level(graph: Graph, allocation: Allocation, parent: str | None, indent: str) -> Iterator[str]:
    for node in graph.children(parent):
        if node.kind == "pipeline":
            # one line: Mermaid reserves a single text line for a subgraph title, a second one is
            # drawn over the stages inside it
            title = _mermaid_text(f"{node.id} · {_workers(node, allocation)}")
            yield f'{indent}subgraph {mermaid_id(node.id, "sg")} ["{title}"]'
            yield f"{indent}  direction LR"
            yield f'{indent}  {mermaid_id(node.id, "in")}(("in"))'
            yield from _mermaid_level(graph, allocation, node.id, indent + "  ")
            yield f'{indent}  {mermaid_id(node.id, "ex")}(("out"))'
            yield f"{indent}end"
        else:
            label = f"{_mermaid_text(node.id)}<br/>{_mermaid_text(_workers(node, allocation))}"
            opening, closing = _MERMAID_SHAPES.get(node.kind, ('["', '"]'))
            yield f"{indent}{mermaid_id(node.id)}{opening}{label}{closing}"


# -- DOT ---------------------------------------------------------------------------------------
def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(graph: Graph, allocation: Allocation) -> str:
    lines = [
        f"digraph {_dot_quote(graph.pipeline)} {{",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", fontsize=12];',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    lines.extend(_dot_level(graph, allocation, None, "  "))
    for edge in graph.edges:
        src, dst = _endpoints(graph, edge)
        attrs = "" if edge.route == "direct" else f" [label={_dot_quote(_edge_label(graph, edge))}]"
        lines.append(f"  {_dot_quote(':'.join(src))} -> {_dot_quote(':'.join(dst))}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_level(graph: Graph, allocation: Allocation, parent: str | None, indent: str) -> Iterator[str]:
    for node in graph.children(parent):
        label = _dot_quote(f"{node.id}\n{_workers(node, allocation)}")
        if node.kind == "pipeline":
            yield f"{indent}subgraph {_dot_quote('cluster:' + node.id)} {{"
            yield f"{indent}  label={label};"
            yield f'{indent}  {_dot_quote("i:" + node.id)} [label="in", shape=circle, fontsize=8];'
            yield from _dot_level(graph, allocation, node.id, indent + "  ")
            yield f'{indent}  {_dot_quote("o:" + node.id)} [label="out", shape=circle, fontsize=8];'
            yield f"{indent}}}"
        else:
            shape = _DOT_SHAPES.get(node.kind, "box")
            yield f"{indent}{_dot_quote('s:' + node.id)} [label={label}, shape={shape}];"
