"""A pipeline file checked completely: configuration, code and routing (what the daemon loads).

    spec, problems = load_pipeline(Path("conf.d/orders.toml"))
    spec, problems = parse_pipeline(toml_text, Path("conf.d/orders.toml"))   # e.g. an API PUT body
    problems, checked, invalid = check_paths([Path("conf.d")])              # `pipelined check`

`pipelined.config.load` reads and validates a file; the routing rules are this layer's, so the
functions here hand it `routing_problems` (the graph builder's problems). `check_paths` also
checks the links between the files it is given (`pipelined.graph.links`): a link to an unknown
pipeline or stage is an error for files found in a directory and a warning for a file given on
its own; `to` links that close a loop between pipelines make the file that closes it (in name
order, as the daemon loads them) invalid.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipelined.config import load
from pipelined.config.code import module_clashes
from pipelined.config.load import is_pipeline_file
from pipelined.config.spec import PipelineSpec, Problem
from pipelined.graph.links import Linked, check_links, closing_loop, link_targets, links_of, loop_problem
from pipelined.graph.routing import build_graph

UNREACHED = "no stage sends to"  # the routing warning a link from another file makes untrue


def routing_problems(spec: PipelineSpec) -> tuple[Problem, ...]:
    return build_graph(spec).problems


def load_pipeline(path: Path) -> tuple[PipelineSpec | None, list[Problem]]:
    """Read and validate one pipeline file, routing included."""
    return load.load_pipeline(path, routing_problems)


def parse_pipeline(text: str | bytes, path: Path) -> tuple[PipelineSpec | None, list[Problem]]:
    """Validate a pipeline's TOML as if it were the file at `path` (which need not exist)."""
    return load.parse_pipeline(text, path, routing_problems)


def linked_from_siblings(path: Path) -> set[str]:
    """"pipeline/stage" targets that the other pipeline files next to `path` name in `to` (read
    as plain TOML, nothing imported): a stage of `path` they link to is reached, though `path`
    alone does not show it (`pipelined check FILE`, `pipelined graph FILE`)."""
    found: set[str] = set()
    try:
        siblings = [p for p in path.parent.iterdir() if p != path and p.is_file() and is_pipeline_file(p)]
    except OSError:
        return found
    for sibling in siblings:
        try:
            document = tomllib.loads(sibling.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        for stage in _stage_tables(document.get("stage")):
            targets = stage.get("to")
            if isinstance(targets, list):
                found.update(t for t in targets if isinstance(t, str) and t.startswith(f"{path.stem}/"))
    return found


def _stage_tables(raw: Any) -> Iterator[dict[str, Any]]:
    for stage in raw if isinstance(raw, list) else ():
        if isinstance(stage, dict):
            yield stage
            yield from _stage_tables(stage.get("stage"))


def without_linked_warnings(problems: Sequence[Problem], reached: set[str]) -> list[Problem]:
    """`problems` less the "no stage sends to X" warnings about stages that a link reaches."""
    return [p for p in problems if not _reached_by_a_link(p, reached)]


def check_paths(paths: Sequence[Path]) -> tuple[list[Problem], int, int]:
    """Validate files and directories like the daemon would: (problems, files checked, invalid)."""
    files: list[Path] = []
    in_dirs: set[Path] = set()  # files found in a directory argument: their links must resolve
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found_files = sorted(p for p in path.iterdir() if p.is_file() and is_pipeline_file(p))
            files.extend(found_files)
            in_dirs.update(found_files)
        elif path.exists():
            files.append(path)
        else:
            what = path.stem if path.suffix == ".toml" else "conf dir"
            problems.append(Problem(str(path), what, "no such file or directory"))
    invalid = len(problems)
    specs: list[PipelineSpec] = []
    per_file: list[Problem] = []
    invalid_names: set[str] = set()
    for file in files:
        spec, found = load_pipeline(file)
        per_file.extend(found)
        if spec is None:
            invalid += 1
            invalid_names.add(file.stem)
        else:
            specs.append(spec)
    linked = [Linked(spec, build_graph(spec).graph) for spec in specs]
    reached = link_targets(linked)
    for file in files:
        if file not in in_dirs:
            reached |= linked_from_siblings(file)
    problems.extend(without_linked_warnings(per_file, reached))
    across = [*check_links(linked, lambda spec: spec.file in in_dirs, invalid_names), *link_loops(linked)]
    across += module_clashes(specs)
    problems.extend(across)
    invalid += len({p.file for p in across if p.severity == "error"})
    return problems, len(files) + sum(1 for p in paths if not p.exists()), invalid


def _reached_by_a_link(problem: Problem, reached: set[str]) -> bool:
    return problem.severity == "warning" and problem.message.startswith(UNREACHED) and problem.where in reached


def link_loops(pipelines: Sequence[Linked]) -> list[Problem]:
    """An error for each file whose `to` links close a loop with the files before it (name order)."""
    by_name = {linked.spec.name: linked for linked in pipelines}
    edges: dict[str, set[str]] = {}
    problems = []
    for name in sorted(by_name):
        linked = by_name[name]
        targets = {ln.target_pipeline for ln in links_of(linked.spec, linked.graph) if ln.written_in == "to"}
        loop = closing_loop(edges, name, targets)
        if loop is None:
            edges[name] = targets
            continue
        problems.append(loop_problem(linked, loop, by_name))
    return problems
