"""The daemon-wide graph (`GET /graph`): every pipeline and the links between them.

JSON: `{"pipelines": [{"name", "state"}], "links": [{"from": "p/s", "to": "p/s"}]}`, pipelines
sorted by name, links in each pipeline's edge order (links written in `to`).

Mermaid and DOT draw each pipeline as a subgraph (cluster) titled `name · state` holding its
stages and their edges, as `pipelined.graph.render` draws one pipeline, with every id qualified
by the pipeline's name; a link is a dashed edge from the sending stage to the target stage in
the other subgraph (labelled "link"). A link whose target is not loaded (or has no such stage) ends at a node of
its own outside every subgraph, labelled "not loaded" or "no such stage". A pipeline with no
valid version is an empty subgraph with one note node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipelined.graph import render
from pipelined.graph.limits import Allocation
from pipelined.graph.model import Graph

_EMPTY = Allocation({}, [])


@dataclass(frozen=True)
class PipelineDrawing:
    """One pipeline as the daemon-wide graph shows it."""

    name: str
    state: str
    graph: Graph | None  # None: no valid version
    allocation: Allocation | None = None


def _links(pipelines: Sequence[PipelineDrawing]) -> list[tuple[str, str]]:
    return [(f"{p.name}/{stage}", target) for p in pipelines if p.graph is not None for stage, target in p.graph.links]


def _missing(pipelines: Sequence[PipelineDrawing]) -> dict[str, str]:
    """Link targets that are no stage of a loaded pipeline → why."""
    stages = {
        f"{p.name}/{node.id}" for p in pipelines if p.graph is not None for node in p.graph.stage_nodes()
    }
    names = {p.name for p in pipelines}
    return {
        target: ("no such stage" if target.split("/", 1)[0] in names else "not loaded")
        for _, target in _links(pipelines)
        if target not in stages
    }


def render_daemon_json(pipelines: Sequence[PipelineDrawing]) -> dict[str, Any]:
    ordered = sorted(pipelines, key=lambda p: p.name)
    return {
        "pipelines": [{"name": p.name, "state": p.state} for p in ordered],
        "links": [{"from": src, "to": dst} for src, dst in _links(ordered)],
    }


# -- Mermaid -----------------------------------------------------------------------------------
def render_daemon_mermaid(pipelines: Sequence[PipelineDrawing]) -> str:
    ordered = sorted(pipelines, key=lambda p: p.name)
    lines = ["flowchart LR"]
    for p in ordered:
        title = render.mermaid_text(f"{p.name} · {p.state}")
        lines.append(f'  subgraph {render.mermaid_id(p.name, "pl")} ["{title}"]')
        lines.append("    direction LR")
        if p.graph is None:
            lines.append(f"    {render.mermaid_node(p.name + '/', p.name, 'no valid version', 'note')}")
        else:
            allocation = p.allocation or _EMPTY
            lines.extend(render.mermaid_nodes(p.graph, allocation, None, "    ", f"{p.name}/", externals=False))
        lines.append("  end")
    for target, why in _missing(ordered).items():
        lines.append(f"  {render.mermaid_node(target, target, why, 'external')}")
    for p in ordered:
        if p.graph is not None:
            lines.extend(render.mermaid_edges(p.graph, f"{p.name}/", links=False))
    for src, dst in _links(ordered):
        lines.append(f"  {render.mermaid_id(src)} -.->|link| {render.mermaid_id(dst)}")
    return "\n".join(lines) + "\n"


# -- DOT ---------------------------------------------------------------------------------------
def render_daemon_dot(pipelines: Sequence[PipelineDrawing]) -> str:
    ordered = sorted(pipelines, key=lambda p: p.name)
    lines = [
        "digraph pipelined {",
        "  rankdir=LR;",
        "  compound=true;",
        '  graph [fontname="Helvetica", fontsize=12];',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for p in ordered:
        lines.extend(_dot_pipeline(p))
    for target, why in _missing(ordered).items():
        label = render.dot_quote(f"{target}\n{why}")
        lines.append(f"  {render.dot_id('s', target)} [label={label}, shape=box, style=dashed];")
    for p in ordered:
        if p.graph is not None:
            lines.extend(render.dot_edges(p.graph, f"{p.name}/", links=False))
    for src, dst in _links(ordered):
        lines.append(f'  {render.dot_id("s", src)} -> {render.dot_id("s", dst)} [style=dashed, label="link"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_pipeline(p: PipelineDrawing) -> Iterator[str]:
    yield f"  subgraph {render.dot_quote('cluster:' + p.name)} {{"
    yield f"    label={render.dot_quote(f'{p.name} · {p.state}')};"
    if p.graph is None:
        yield f'    {render.dot_id("s", p.name + "/")} [label="no valid version", shape=note];'
    else:
        yield from render.dot_nodes(p.graph, p.allocation or _EMPTY, None, "    ", f"{p.name}/", externals=False)
    yield "  }"
