"""The routing graph of one pipeline: nodes (stages) and edges, built from a PipelineSpec.

`pipelined.graph.routing.build_graph(spec)` applies the routing rules of docs/config.md and
returns a `GraphResult`: the Graph with every problem it found. The Graph is pure topology:
effective thread/process counts come from `pipelined.graph.limits`, rendering from
`pipelined.graph.render`.

Nested pipelines are flattened: every node knows its `parent` (the id of the nested-pipeline
node that holds it, or None at the top level). Edges include, for a nested pipeline `N`:
`N -> entry` for each of its entry stages (its *entrance*, routed by N's fanout) and
`exit -> N` for each of its exit stages (its *exit*); `N -> X` edges at the parent level carry
what leaves N (round_robin when several). An edge whose `dst` is an ancestor of its `src` is
an exit edge; the runtime treats it as "leave the nested pipeline", never as a cycle.

A link (`to = ["billing/charge"]`) is an edge to an *external* node: `kind` "external", id
`billing/charge`, always at the top level (`parent` None, whichever level links to it). It
stands for a stage of another pipeline: no queue, no workers, no budget here (`Graph.links`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelined.config.spec import Problem, StageSpec

Route = Literal["direct", "round_robin", "broadcast", "weighted"]
EXTERNAL = "external"  # the kind of a node that is a stage of another pipeline (a link target)


@dataclass(frozen=True)
class Node:
    id: str  # the stage name (unique in the file)
    kind: str
    stage: StageSpec
    parent: str | None  # id of the enclosing nested pipeline, None at top level


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    route: Route  # how src sends along this edge: direct when it is src's only edge (of that port)


@dataclass(frozen=True)
class Graph:
    pipeline: str
    nodes: tuple[Node, ...]  # file order, a nested pipeline before its children
    edges: tuple[Edge, ...]

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def children(self, parent: str | None) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.parent == parent)

    def stage_nodes(self) -> tuple[Node, ...]:
        """The nodes that are stages of this pipeline (every node but link targets)."""
        return tuple(n for n in self.nodes if n.kind != EXTERNAL)

    def is_external(self, node_id: str) -> bool:
        return any(n.id == node_id and n.kind == EXTERNAL for n in self.nodes)

    @property
    def links(self) -> tuple[tuple[str, str], ...]:
        """(stage, "pipeline/stage") for every link in `to`, in edge order."""
        external = {n.id for n in self.nodes if n.kind == EXTERNAL}
        return tuple((e.src, e.dst) for e in self.edges if e.dst in external)

    def is_ancestor(self, ancestor: str, node_id: str) -> bool:
        parent = self.node(node_id).parent
        while parent is not None:
            if parent == ancestor:
                return True
            parent = self.node(parent).parent
        return False

    def topological_index(self) -> dict[str, int]:
        """node id → its place in an order where every node comes after its upstream nodes
        (a nested pipeline's exit edges do not count: they are not a cycle)."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(node_id: str) -> None:
            if node_id in seen:
                return
            seen.add(node_id)
            for edge in self.in_edges(node_id):
                if not self.is_ancestor(node_id, edge.src):
                    visit(edge.src)
            order.append(node_id)

        for node in self.nodes:
            visit(node.id)
        return {node_id: i for i, node_id in enumerate(order)}

    def out_edges(self, node_id: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.src == node_id)

    def in_edges(self, node_id: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.dst == node_id)

    def entrance(self, nested_id: str) -> tuple[Edge, ...]:
        """Edges from a nested pipeline to its entry stages."""
        return tuple(e for e in self.out_edges(nested_id) if self.node(e.dst).parent == nested_id)

    def exit_edges(self, nested_id: str) -> tuple[Edge, ...]:
        """Edges from a nested pipeline's exit stages back to it."""
        return tuple(e for e in self.in_edges(nested_id) if self.is_ancestor(nested_id, e.src))

    def downstream(self, node_id: str) -> tuple[str, ...]:
        """Where items emitted by `node_id` go (for a nested pipeline: what leaves it)."""
        return tuple(
            e.dst
            for e in self.out_edges(node_id)
            if not (self.node(node_id).kind == "pipeline" and self.node(e.dst).parent == node_id)
        )

    def upstream(self, node_id: str) -> tuple[str, ...]:
        """Stages that send items into `node_id` (for a nested pipeline: from outside it)."""
        return tuple(
            e.src
            for e in self.in_edges(node_id)
            if not (self.node(node_id).kind == "pipeline" and self.is_ancestor(node_id, e.src))
        )


@dataclass(frozen=True)
class GraphResult:
    graph: Graph
    problems: tuple[Problem, ...]  # errors and warnings, with file, line and stage

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

