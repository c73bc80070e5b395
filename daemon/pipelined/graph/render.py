"""A pipeline's graph → JSON (api.md Graph shape), Mermaid `flowchart LR`, Graphviz `digraph`.

JSON: `{"nodes": [...], "edges": [...]}` for the top level; each node is
`{"id", "kind", "threads", "processes", "auto_start"}` where threads/processes are the effective
counts of `limits.Allocation` (a stage in worker processes has threads 0, a stage in threads has
processes 0, accumulators and nested containers 0/0). `auto_start` is the producer's setting;
it is `false` for every other kind (only producers start on their own), so the field is always
a bool. A nested pipeline is a node with `"kind": "pipeline"` and
`"children": {"nodes": [...], "edges": [...]}`; its children's edges include `N -> entry`
(its entrance) and `exit -> N` (its exit); the parent's edges end at `N`.

A link (`to = ["billing/charge"]`) is an edge to an external node `{"id": "billing/charge",
"kind": "external", ..., "pipeline": "billing", "stage": "charge"}`, drawn as a parallelogram
(Mermaid) or a dashed box (DOT). `pipelined.graph.render_daemon` draws every pipeline together
with these functions, each pipeline's ids qualified by `ns` ("<pipeline>/").

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
from pipelined.graph.model import EXTERNAL, Edge, Graph, Node

_NONE = StageAllocation(0, 0, 0, 0)

_MERMAID_SHAPES = {
    "producer": ('(["', '"])'),
    "processor": ('["', '"]'),
    "consumer": ('[("', '")]'),
    "accumulator": ('{{"', '"}}'),
    EXTERNAL: ('[/"', '"/]'),
}
_MERMAID_PREFIX = {"s": "st", "i": "in", "o": "ex", "x": "st"}  # x: an external node ("p/s", never qualified)  # never a leading o/x: `--o`/`--x` are arrows
_DOT_SHAPES = {
    "producer": "invhouse",
    "processor": "box",
    "consumer": "cylinder",
    "accumulator": "hexagon",
    EXTERNAL: 'box, style=dashed',
}


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
    if node.kind == EXTERNAL:
        return f"link to pipeline {node.id.split('/', 1)[0]}"
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
    elif node.kind == EXTERNAL:
        data["pipeline"], data["stage"] = node.id.split("/", 1)
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


def mermaid_text(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def render_mermaid(graph: Graph, allocation: Allocation) -> str:
    lines = ["flowchart LR"]
    lines.extend(mermaid_nodes(graph, allocation, None, "  "))
    lines.extend(mermaid_edges(graph))
    return "\n".join(lines) + "\n"


def mermaid_edges(graph: Graph, ns: str = "", links: bool = True) -> Iterator[str]:
    """One line per edge; `links=False` leaves out the edges to external nodes."""
    for edge in graph.edges:
        if not links and graph.is_external(edge.dst):
            continue
        src, dst = _endpoints(graph, edge)
        arrow = "-->" if edge.route == "direct" else f"-->|{mermaid_text(_edge_label(graph, edge))}|"
        src_id = mermaid_id(ns + src[1], _MERMAID_PREFIX[src[0]])
        dst_id = mermaid_id(ns + dst[1] if dst[0] != "x" else dst[1], _MERMAID_PREFIX[dst[0]])
        yield f"  {src_id} {arrow} {dst_id}"


def _endpoints(graph: Graph, edge: Edge) -> tuple[tuple[str, str], tuple[str, str]]:
    """(prefix, name) of both ends: a nested pipeline is entered at `i_` and left from `o_`; an
    external node is `x` (its id is already "pipeline/stage")."""
    src_node, dst_node = graph.node(edge.src), graph.node(edge.dst)
    if src_node.kind == "pipeline":
        src = ("i", edge.src) if dst_node.parent == edge.src else ("o", edge.src)
    else:
        src = ("s", edge.src)
    if dst_node.kind == EXTERNAL:
        dst = ("x", edge.dst)
    elif dst_node.kind == "pipeline":
        dst = ("o", edge.dst) if src_node.parent == edge.dst else ("i", edge.dst)
    else:
        dst = ("s", edge.dst)
    return src, dst


def mermaid_nodes(
    graph: Graph, allocation: Allocation, parent: str | None, indent: str, ns: str = "", externals: bool = True
) -> Iterator[str]:
    """The node lines of one level (nested pipelines as subgraphs); ids qualified by `ns`."""
    for node in graph.children(parent):
        if node.kind == EXTERNAL:
            if externals:
                yield f"{indent}{mermaid_node(node.id, node.id, _workers(node, allocation), EXTERNAL)}"
        elif node.kind == "pipeline":
            # one line: Mermaid reserves a single text line for a subgraph title, a second one is
            # drawn over the stages inside it
            title = mermaid_text(f"{node.id} · {_workers(node, allocation)}")
            yield f'{indent}subgraph {mermaid_id(ns + node.id, "sg")} ["{title}"]'
            yield f"{indent}  direction LR"
            yield f'{indent}  {mermaid_id(ns + node.id, "in")}(("in"))'
            yield from mermaid_nodes(graph, allocation, node.id, indent + "  ", ns, externals)
            yield f'{indent}  {mermaid_id(ns + node.id, "ex")}(("out"))'
            yield f"{indent}end"
        else:
            yield f"{indent}{mermaid_node(ns + node.id, node.id, _workers(node, allocation), node.kind)}"


def mermaid_node(name: str, title: str, detail: str, kind: str) -> str:
    """`st_<name>["title<br/>detail"]` in the shape of `kind`."""
    label = f"{mermaid_text(title)}<br/>{mermaid_text(detail)}"
    opening, closing = _MERMAID_SHAPES.get(kind, ('["', '"]'))
    return f"{mermaid_id(name)}{opening}{label}{closing}"


# -- DOT ---------------------------------------------------------------------------------------
def dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(graph: Graph, allocation: Allocation) -> str:
    lines = [
        f"digraph {dot_quote(graph.pipeline)} {{",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", fontsize=12];',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    lines.extend(dot_nodes(graph, allocation, None, "  "))
    lines.extend(dot_edges(graph))
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_id(kind: str, name: str) -> str:
    """`"s:<name>"` (a stage, or an external "pipeline/stage"), `"i:<N>"` / `"o:<N>"` (a nested
    pipeline's in and out), quoted."""
    return dot_quote(f"{'s' if kind == 'x' else kind}:{name}")


def dot_edges(graph: Graph, ns: str = "", links: bool = True) -> Iterator[str]:
    for edge in graph.edges:
        if not links and graph.is_external(edge.dst):
            continue
        src, dst = _endpoints(graph, edge)
        attrs = "" if edge.route == "direct" else f" [label={dot_quote(_edge_label(graph, edge))}]"
        dst_name = dst[1] if dst[0] == "x" else ns + dst[1]
        yield f"  {dot_id(src[0], ns + src[1])} -> {dot_id(dst[0], dst_name)}{attrs};"


def dot_nodes(
    graph: Graph, allocation: Allocation, parent: str | None, indent: str, ns: str = "", externals: bool = True
) -> Iterator[str]:
    for node in graph.children(parent):
        label = dot_quote(f"{node.id}\n{_workers(node, allocation)}")
        if node.kind == EXTERNAL:
            if externals:
                yield f"{indent}{dot_id('x', node.id)} [label={label}, shape={_DOT_SHAPES[EXTERNAL]}];"
        elif node.kind == "pipeline":
            yield f"{indent}subgraph {dot_quote('cluster:' + ns + node.id)} {{"
            yield f"{indent}  label={label};"
            yield f'{indent}  {dot_id("i", ns + node.id)} [label="in", shape=circle, fontsize=8];'
            yield from dot_nodes(graph, allocation, node.id, indent + "  ", ns, externals)
            yield f'{indent}  {dot_id("o", ns + node.id)} [label="out", shape=circle, fontsize=8];'
            yield f"{indent}}}"
        else:
            shape = _DOT_SHAPES.get(node.kind, "box")
            yield f"{indent}{dot_id('s', ns + node.id)} [label={label}, shape={shape}];"
