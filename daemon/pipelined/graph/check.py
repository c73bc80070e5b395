"""A pipeline file checked completely: configuration, code and routing (what the daemon loads).

    spec, problems = load_pipeline(Path("conf.d/orders.toml"))
    spec, problems = parse_pipeline(toml_text, Path("conf.d/orders.toml"))   # e.g. an API PUT body
    problems, checked, invalid = check_paths([Path("conf.d")])              # `pipelined check`

`pipelined.config.load` reads and validates a file; the routing rules are this layer's, so the
functions here hand it `routing_problems` (the graph builder's problems).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipelined.config import load
from pipelined.config.code import module_clashes
from pipelined.config.load import is_pipeline_file
from pipelined.config.spec import PipelineSpec, Problem
from pipelined.graph.routing import build_graph


def routing_problems(spec: PipelineSpec) -> tuple[Problem, ...]:
    return build_graph(spec).problems


def load_pipeline(path: Path) -> tuple[PipelineSpec | None, list[Problem]]:
    """Read and validate one pipeline file, routing included."""
    return load.load_pipeline(path, routing_problems)


def parse_pipeline(text: str | bytes, path: Path) -> tuple[PipelineSpec | None, list[Problem]]:
    """Validate a pipeline's TOML as if it were the file at `path` (which need not exist)."""
    return load.parse_pipeline(text, path, routing_problems)


def check_paths(paths: Sequence[Path]) -> tuple[list[Problem], int, int]:
    """Validate files and directories like the daemon would: (problems, files checked, invalid)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and is_pipeline_file(p)))
        elif path.exists():
            files.append(path)
        else:
            what = path.stem if path.suffix == ".toml" else "conf dir"
            problems.append(Problem(str(path), what, "no such file or directory"))
    invalid = len(problems)
    specs: list[PipelineSpec] = []
    for file in files:
        spec, found = load_pipeline(file)
        problems.extend(found)
        if spec is None:
            invalid += 1
        else:
            specs.append(spec)
    clashes = module_clashes(specs)
    problems.extend(clashes)
    invalid += len({p.file for p in clashes})
    return problems, len(files) + sum(1 for p in paths if not p.exists()), invalid
