"""Routing rules 1-6 and nested pipelines (docs/config.md) → `GraphResult`.

Every level of the file (the top level, then each nested pipeline's children) is routed on its
own, because `to`/`from` only name siblings:

- implicit edges (rule 1-2): in file order each stage feeds the next stage that is not a
  producer, unless it declares `to`, is a consumer, or that next stage declares `from`. In a
  nested pipeline `N` (sequential), `N` itself stands before the first child (its *entrance*,
  edge `N -> child`) and after the last one (its *exit*, edge `child -> N`). In a parallel
  nested pipeline every child without `from` (and not a producer) is an entry and every child
  without `to` (and not a consumer) is an exit.
- explicit edges: `to` / `from`; an edge declared by both ends exists once.
- links: a `to` name `pipeline/stage` is a stage of another pipeline, an edge to an external
  node (kind "external", top level). Whether that pipeline and stage exist is checked across
  files (`pipelined.graph.links`), not here.

Edges that break a rule (into a producer, out of a consumer, to an unknown stage) are reported
and left out of the graph, so the graph of a file with errors is still drawable. A nested
pipeline none of whose children can reach its exit (they all end in consumers) sends nothing
on: like a consumer it gets no implicit outgoing edge.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipelined.config.linkref import is_link, link_format_problem, split_link
from pipelined.config.spec import PipelineSpec, Problem, Severity, StageSpec
from pipelined.graph.model import EXTERNAL, Edge, Graph, GraphResult, Node, Route


def build_graph(spec: PipelineSpec) -> GraphResult:
    """Apply routing rules 1-6 and the nested-pipeline rules; collect every problem."""
    return _Router(spec).route()


@dataclass
class _Level:
    """One list of sibling stages: the top level (`owner` None) or a nested pipeline's children."""

    owner: StageSpec | None
    stages: list[StageSpec]
    edges: dict[tuple[str, str], None] = field(default_factory=dict)  # ordered set of (src, dst)

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.stages}

    def add(self, src: str, dst: str) -> None:
        self.edges.setdefault((src, dst), None)

    def outs(self, name: str) -> list[str]:
        return [d for s, d in self.edges if s == name]

    def ins(self, name: str) -> list[str]:
        return [s for s, d in self.edges if d == name]


class _Router:
    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.problems: list[Problem] = []
        self.nodes: list[Node] = []
        self.first_line: dict[str, int | None] = {}
        self.levels: list[_Level] = []
        self.no_exit: set[str] = set()  # nested pipelines whose children never reach the exit
        self.externals: dict[str, None] = {}  # link targets, in the order first named

    # -- entry point -------------------------------------------------------------------------
    def route(self) -> GraphResult:
        self._collect(self.spec.stages, None)
        for level in self.levels:  # children before their nested pipeline's level
            self._route_level(level)
        for target in self.externals:
            self.nodes.append(Node(target, EXTERNAL, StageSpec(name=target), None))
        order = {n.id: i for i, n in enumerate(self.nodes)}
        pairs = sorted(
            {pair for level in self.levels for pair in level.edges},
            key=lambda p: (order[p[0]], order[p[1]]),
        )
        graph = Graph(self.spec.name, tuple(self.nodes), ())
        edges = tuple(Edge(src, dst, self._route_of(graph, src, dst, pairs)) for src, dst in pairs)
        graph = Graph(self.spec.name, tuple(self.nodes), edges)
        return GraphResult(graph, tuple(self.problems))

    # -- problems ----------------------------------------------------------------------------
    def _report(
        self, stage: StageSpec, message: str, key: str | None = None, severity: Severity = "error"
    ) -> None:
        where = f"{self.spec.name}/{stage.name}" + (f"/{key}" if key else "")
        self.problems.append(Problem(str(self.spec.file), where, message, stage.line, severity))

    # -- nodes -------------------------------------------------------------------------------
    def _collect(self, stages: Sequence[StageSpec], owner: StageSpec | None) -> None:
        """Add nodes in file order (a nested pipeline before its children) and levels in
        post-order (a nested pipeline's children before the level that holds it); drop duplicates."""
        kept: list[StageSpec] = []
        for stage in stages:
            if stage.name in self.first_line:
                line = self.first_line[stage.name]
                first = f" (first defined at line {line})" if line else ""
                self._report(
                    stage, f'duplicate stage name "{stage.name}"{first}; names must be unique in the file'
                )
                continue
            self.first_line[stage.name] = stage.line
            self.nodes.append(Node(stage.name, stage.kind, stage, owner.name if owner else None))
            kept.append(stage)
            if stage.kind == "pipeline":
                self._collect(stage.stages, stage)
        self.levels.append(_Level(owner, kept))

    def _level_of(self, name: str) -> _Level | None:
        return next((lv for lv in self.levels if name in lv.names), None)

    # -- one level ---------------------------------------------------------------------------
    def _route_level(self, level: _Level) -> None:
        self._explicit_edges(level)
        if level.owner is not None and level.owner.mode == "parallel":
            self._parallel_edges(level, level.owner)
        else:
            self._sequential_edges(level)
        self._check_cycles(level)
        for stage in level.stages:
            if stage.kind != "pipeline":  # a nested pipeline's fanout governs its entrance
                self._check_fanout(stage, level.outs(stage.name))
        if level.owner is not None:
            self._check_nested(level, level.owner)
        self._check_ends(level)

    def _sends_nothing(self, stage: StageSpec) -> bool:
        return stage.kind == "consumer" or stage.name in self.no_exit

    def _explicit_edges(self, level: _Level) -> None:
        by_name = {s.name: s for s in level.stages}
        for stage in level.stages:
            if stage.to is not None and self._sends_nothing(stage):
                self._report(stage, self._why_sends_nothing(stage), "to")
            elif stage.to is not None:
                local = [name for name in stage.to if not is_link(name)]
                for link in (name for name in stage.to if is_link(name)):
                    self._link(level, stage, link)
                for target in self._resolve(level, stage, "to", local):
                    if by_name[target].kind == "producer":
                        self._report(stage, f'"{target}" is a producer; producers take no input', "to")
                    else:
                        level.add(stage.name, target)
            if stage.from_ is not None and stage.kind == "producer":
                self._report(stage, f'producer "{stage.name}" cannot receive items from other stages', "from")
            elif stage.from_ is not None:
                for link in (name for name in stage.from_ if is_link(name)):
                    self._report(
                        stage,
                        f'"{link}" is a link: links are written in the sending stage\'s `to` '
                        "(or ctx.emit_to); `from` names stages of this pipeline",
                        "from",
                    )
                local = [name for name in stage.from_ if not is_link(name)]
                for source in self._resolve(level, stage, "from", local):
                    if self._sends_nothing(by_name[source]):
                        self._report(stage, self._why_sends_nothing(by_name[source]), "from")
                    else:
                        level.add(source, stage.name)

    def _link(self, level: _Level, stage: StageSpec, name: str) -> None:
        """An edge to the stage of another pipeline that `name` ("pipeline/stage") names."""
        parsed = split_link(name)
        if parsed is None:
            self._report(stage, link_format_problem(name), "to")
        elif parsed[0] == self.spec.name:
            self._report(
                stage, f'"{name}" names this pipeline; write its stage as "{parsed[1]}" (a link is to another pipeline)', "to"
            )
        else:
            self.externals.setdefault(name, None)
            level.add(stage.name, name)

    def _why_sends_nothing(self, stage: StageSpec) -> str:
        if stage.kind == "consumer":
            return f'"{stage.name}" is a consumer; consumers send nothing downstream'
        return f'nested pipeline "{stage.name}" sends nothing downstream: none of its stages reaches its exit'

    def _resolve(self, level: _Level, stage: StageSpec, key: str, names: Iterable[str]) -> list[str]:
        """The names that are siblings of `stage`; every other name is reported."""
        found: list[str] = []
        for name in names:
            if name in level.names:
                found.append(name)
                continue
            self._report(stage, self._unknown(level, stage, name), key)
        return found

    def _unknown(self, level: _Level, stage: StageSpec, name: str) -> str:
        other = self._level_of(name)
        if other is None:
            close = difflib.get_close_matches(name, [n.id for n in self.nodes], n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            return f'unknown stage "{name}"{hint}'
        where = f'nested pipeline "{other.owner.name}"' if other.owner else "the top level"
        here = f'nested pipeline "{level.owner.name}"' if level.owner else "the top level"
        return (
            f'"{name}" is a stage of {where}, but "{stage.name}" is in {here}; '
            "to/from can only name stages at the same level"
        )

    def _sequential_edges(self, level: _Level) -> None:
        stages, owner = level.stages, level.owner
        if owner is not None:
            first = next((s for s in stages if s.kind != "producer"), None)
            if first is not None and first.from_ is None:
                level.add(owner.name, first.name)
        for i, stage in enumerate(stages):
            if stage.to is not None or self._sends_nothing(stage):
                continue
            nxt = next((s for s in stages[i + 1 :] if s.kind != "producer"), None)
            if nxt is None and owner is not None:
                level.add(stage.name, owner.name)
            elif nxt is not None and nxt.from_ is None:
                level.add(stage.name, nxt.name)

    def _parallel_edges(self, level: _Level, owner: StageSpec) -> None:
        for stage in level.stages:
            if stage.kind != "producer" and stage.from_ is None:
                level.add(owner.name, stage.name)
        for stage in level.stages:
            if stage.to is None and not self._sends_nothing(stage):
                level.add(stage.name, owner.name)

    # -- checks ------------------------------------------------------------------------------
    def _check_cycles(self, level: _Level) -> None:
        names = level.names
        succ: dict[str, list[str]] = {s.name: [] for s in level.stages}
        for src, dst in level.edges:
            if src in names and dst in names:
                succ[src].append(dst)
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        by_name = {s.name: s for s in level.stages}

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for nxt in succ[name]:
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt) :] + [nxt]
                    self._report(by_name[nxt], "cycle: " + " -> ".join(cycle))
                elif nxt not in state:
                    visit(nxt, path)
            path.pop()
            state[name] = 2

        for stage in level.stages:
            if stage.name not in state:
                visit(stage.name, [])

    def _check_fanout(self, stage: StageSpec, targets: list[str]) -> None:
        fanout = stage.effective_fanout
        if fanout != "weighted":
            if stage.weights:
                self._report(stage, 'weights are ignored unless fanout = "weighted"', "weights", "warning")
            return
        if not stage.weights:
            self._report(stage, 'fanout = "weighted" needs weights = { stage = weight, ... }', "fanout")
            return
        for name, weight in stage.weights.items():
            if name not in targets:
                listed = ", ".join(targets) or "none"
                known = name in self.first_line
                what = "is not a downstream stage of" if known else "unknown stage; not a downstream stage of"
                self._report(stage, f'"{name}" {what} "{stage.name}" (downstream: {listed})', "weights")
            elif isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                self._report(
                    stage, f'weight of "{name}" must be a positive integer, got {weight!r}', "weights"
                )
        for name in targets:
            if name not in stage.weights:
                self._report(stage, f'no weight for downstream stage "{name}"', "weights")

    def _check_nested(self, level: _Level, owner: StageSpec) -> None:
        entries = level.outs(owner.name)
        exits = level.ins(owner.name)
        if not entries:
            self._report(
                owner,
                f'nested pipeline "{owner.name}" has no entry stage: items reaching it would go nowhere',
            )
        if not exits:
            self.no_exit.add(owner.name)
        self._check_fanout(owner, entries)

    def _check_ends(self, level: _Level) -> None:
        for stage in level.stages:
            name = stage.name
            if not level.outs(name) and stage.kind == "producer":
                self._report(stage, f'producer "{name}" has no downstream stage: its items would go nowhere')
            elif not level.outs(name) and not self._sends_nothing(stage):
                self._report(
                    stage,
                    f'"{name}" sends to no stage: its outputs are discarded (add `to`, or make it a consumer)',
                    severity="warning",
                )
            if not level.ins(name) and stage.kind != "producer":
                self._report(
                    stage,
                    f'no stage sends to "{name}": it only gets items from a trigger with `items`',
                    severity="warning",
                )

    # -- routes ------------------------------------------------------------------------------
    def _route_of(self, graph: Graph, src: str, dst: str, pairs: Sequence[tuple[str, str]]) -> Route:
        """direct when `src` has one target on that port, else its fanout (a nested exit: round_robin)."""
        node = graph.node(src)
        if node.kind == "pipeline":
            entering = graph.node(dst).parent == src
            port = [d for s, d in pairs if s == src and (graph.node(d).parent == src) == entering]
            if len(port) == 1:
                return "direct"
            return node.stage.effective_fanout if entering else "round_robin"
        port = [d for s, d in pairs if s == src]
        return "direct" if len(port) == 1 else node.stage.effective_fanout
