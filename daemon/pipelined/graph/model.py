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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelined.config.spec import Problem, StageSpec

Route = Literal["direct", "round_robin", "broadcast", "weighted"]


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

    def is_ancestor(self, ancestor: str, node_id: str) -> bool:
        parent = self.node(node_id).parent
        while parent is not None:
            if parent == ancestor:
                return True
            parent = self.node(parent).parent
        return False

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

