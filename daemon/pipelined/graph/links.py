"""Links between pipelines, across files: which exist, where they lead, and loops.

    links = links_of(spec, graph)                      # Link(...) for `to` and emit_to literals
    problems = check_links(pipelines, strict)          # unknown pipeline / stage, into a producer
    loop = closing_loop(edges, "b", {"a"})             # ["b", "a", "b"] when a already links to b
    problem = loop_problem(linked_b, loop, by_name)    # "... b -> a -> b (b/out -> a/in, a/fwd -> b/in)"

A file alone cannot know other files: `pipelined check DIR` and the daemon (which knows every
loaded pipeline) call these with every pipeline they have. Loops count only links written in
`to` (a `ctx.emit_to` target is a run-time choice); links to unknown pipelines or stages are
errors for `pipelined check DIR` and warnings for a single file's check (`strict`), and the
daemon only logs them (the target may come later; until then items fail and dead-letter).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipelined.config.spec import PipelineSpec, Problem, Severity
from pipelined.graph.model import Graph


@dataclass(frozen=True)
class Link:
    pipeline: str  # the sending pipeline
    stage: str  # the sending stage
    target: str  # "pipeline/stage"
    written_in: str  # "to" or "emit_to"

    @property
    def source(self) -> str:
        return f"{self.pipeline}/{self.stage}"

    @property
    def target_pipeline(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def target_stage(self) -> str:
        return self.target.split("/", 1)[1]


@dataclass(frozen=True)
class Linked:
    """One pipeline as the link checks see it: its spec and routed graph."""

    spec: PipelineSpec
    graph: Graph


def links_of(spec: PipelineSpec, graph: Graph) -> list[Link]:
    """Every link of a pipeline: `to` edges to external nodes, then literal `ctx.emit_to` links."""
    found = [Link(spec.name, stage, target, "to") for stage, target in graph.links]
    seen = {(link.stage, link.target) for link in found}
    found += [
        Link(spec.name, stage, target, "emit_to")
        for stage, target in spec.emitted_links
        if (stage, target) not in seen
    ]
    return found


def pipeline_edges(pipelines: Iterable[Linked]) -> dict[str, set[str]]:
    """pipeline → the pipelines its `to` links lead to."""
    edges: dict[str, set[str]] = {}
    for linked in pipelines:
        edges[linked.spec.name] = {link.target_pipeline for link in links_of(linked.spec, linked.graph)
                                   if link.written_in == "to"}  # fmt: skip
    return edges


def closing_loop(edges: Mapping[str, set[str]], name: str, targets: Iterable[str]) -> list[str] | None:
    """The loop `name` linking to `targets` would close among `edges` (pipeline → targets), as
    [name, ..., name]; None when it closes none. A link to itself is such a loop too."""
    for first in sorted(set(targets)):
        path = _path(edges, first, name)
        if path is not None:
            return [name, *path]
    return None


def _path(edges: Mapping[str, set[str]], start: str, goal: str) -> list[str] | None:
    """Shortest path start → goal along `edges` (breadth first), as a list of pipelines."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            if node == goal:
                path = [node]
                while (step := previous[path[-1]]) is not None:
                    path.append(step)
                return path[::-1]
            for nxt in sorted(edges.get(node, ())):
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return None


def loop_text(loop: Sequence[str], pipelines: Mapping[str, Linked]) -> str:
    """`a -> b -> a (a/fwd -> b/in, b/back -> a/x)`: the pipelines, then one link per step."""
    steps = []
    for here, there in zip(loop, loop[1:], strict=False):
        links = links_of(pipelines[here].spec, pipelines[here].graph) if here in pipelines else []
        link = next((ln for ln in links if ln.written_in == "to" and ln.target_pipeline == there), None)
        if link is not None:
            steps.append(f"{link.source} -> {link.target}")
    return " -> ".join(loop) + (f" ({', '.join(steps)})" if steps else "")


def loop_problem(linked: Linked, loop: Sequence[str], pipelines: Mapping[str, Linked]) -> Problem:
    """The error for the file whose `to` links close `loop`."""
    spec = linked.spec
    first = next(
        (ln for ln in links_of(spec, linked.graph) if ln.written_in == "to" and ln.target_pipeline == loop[1]),
        None,
    )
    stage = spec.stage(first.stage) if first else None
    where = f"{spec.name}/{first.stage}/to" if first else spec.name
    message = f"links close a loop between pipelines: {loop_text(loop, {**pipelines, spec.name: linked})}"
    return Problem(str(spec.file), where, message, stage.line if stage else None)


def check_links(
    pipelines: Sequence[Linked],
    strict: Callable[[PipelineSpec], bool],
    invalid: Iterable[str] = (),
    scope: str | None = None,
) -> list[Problem]:
    """Links to unknown pipelines or stages, or into a producer; errors where `strict(spec)`,
    else warnings. Links to a pipeline in `invalid` (its file has errors of its own) are skipped.
    `scope` words where a pipeline was looked for ("loaded", for the daemon's log)."""
    by_name = {linked.spec.name: linked for linked in pipelines}
    skipped = set(invalid)
    problems: list[Problem] = []
    for linked in pipelines:
        severity: Severity = "error" if strict(linked.spec) else "warning"
        for link in links_of(linked.spec, linked.graph):
            if link.target_pipeline in skipped:
                continue
            message = _link_problem(link, by_name.get(link.target_pipeline), by_name, strict(linked.spec), scope)
            if message is not None:
                stage = linked.spec.stage(link.stage)
                where = f"{link.source}/{'to' if link.written_in == 'to' else 'call'}"
                problems.append(Problem(str(linked.spec.file), where, message, stage.line if stage else None, severity))
    return problems


def _link_problem(
    link: Link, target: Linked | None, by_name: Mapping[str, Linked], strict: bool, scope: str | None
) -> str | None:
    via = f'link "{link.target}"' if link.written_in == "to" else f'emit_to("{link.target}")'
    if target is None:
        close = difflib.get_close_matches(link.target_pipeline, sorted(by_name), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        where = scope or ("in this directory" if strict else "among the files checked (check the whole conf dir)")
        return f'{via}: no pipeline "{link.target_pipeline}" {where}{hint}'
    stage = target.spec.stage(link.target_stage)
    if stage is None:
        names = [s.name for s in target.spec.walk()]
        close = difflib.get_close_matches(link.target_stage, names, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f'{via}: pipeline "{link.target_pipeline}" has no stage "{link.target_stage}"{hint}'
    if stage.kind == "producer":
        return f'{via}: "{link.target}" is a producer; producers take no input'
    return None


def link_targets(pipelines: Iterable[Linked]) -> set[str]:
    """Every "pipeline/stage" some pipeline links to (those stages are reached from outside)."""
    return {link.target for linked in pipelines for link in links_of(linked.spec, linked.graph)}
