"""`pipelined check [PATH ...]` and `pipelined graph FILE [--format mermaid|dot|json]`.

Both work offline, exactly as the daemon would load the files (every `call` is imported).
`graph --remote NAME` asks a running daemon instead (pipelined.cli.remote.remote_graph);
`graph --remote` with no NAME shows every pipeline and the links between them (`GET /graph`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tomllib
from pathlib import Path
from typing import Any

import orjson

from pipelined.cli.remote import ALL_PIPELINES, remote_graph
from pipelined.config.settings import load_settings
from pipelined.config.spec import PipelineSpec, Problem

DEFAULT_CONF_DIR = Path("/etc/pipelined/conf.d")
DEFAULT_SETTINGS = Path("/etc/pipelined/pipelined.toml")
GRAPH_FORMATS = ("mermaid", "dot", "json")


def add_parsers(sub: Any) -> None:
    """Add `check` and `graph` to the `pipelined` subcommands."""
    check = sub.add_parser(
        "check",
        help="validate pipeline files or directories (like nginx -t)",
        description="Validate pipeline files exactly as the daemon would, including importing every call.",
    )
    check.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="files or dirs (default: the conf dir)"
    )
    check.add_argument("--config", type=Path, metavar="FILE", help="daemon settings file (for its conf_dir)")
    check.set_defaults(handler=run_check)

    graph = sub.add_parser(
        "graph", help="print a pipeline's graph (offline, or --remote from the daemon; --remote alone: all pipelines)"
    )
    graph.add_argument("file", nargs="?", type=Path, metavar="FILE", help="a pipeline file")
    graph.add_argument(
        "--format", choices=GRAPH_FORMATS, default="mermaid", help="output format (default mermaid)"
    )
    graph.add_argument(
        "--remote", nargs="?", const=ALL_PIPELINES, metavar="NAME",
        help="ask the running daemon for pipeline NAME; without NAME, every pipeline and the links between them",
    )  # fmt: skip
    graph.add_argument(
        "--api", metavar="URL", help="daemon API: http://host:port or unix:/path (with --remote)"
    )
    graph.add_argument("--token-file", type=Path, metavar="FILE", help="bearer token file (with --remote)")
    graph.add_argument("--json", action="store_true", help="machine-readable output (with --remote)")
    graph.add_argument("--config", type=Path, metavar="FILE", help="daemon settings file (with --remote)")
    graph.set_defaults(handler=run_graph)


def default_conf_dir(config: Path | None) -> Path:
    """The conf dir from the settings file (`[daemon] conf_dir`), else /etc/pipelined/conf.d."""
    return load_settings(config).daemon.conf_dir


def _conf_dir_from_toml(config: Path | None) -> Path:
    path = config or DEFAULT_SETTINGS
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if config is not None:
            raise
        return DEFAULT_CONF_DIR
    conf_dir = data.get("daemon", {}).get("conf_dir")
    return Path(conf_dir) if isinstance(conf_dir, str) else DEFAULT_CONF_DIR


def summary(problems: list[Problem], checked: int, invalid: int) -> str:
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    return (
        f"checked {checked} file{'s' if checked != 1 else ''}: {checked - invalid} valid, {invalid} invalid "
        f"({errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''})"
    )


def run_check(args: argparse.Namespace) -> int:
    paths: list[Path] = list(args.paths)
    if not paths:
        try:
            paths = [default_conf_dir(args.config)]
        except Exception as exc:  # noqa: BLE001 - a bad settings file is a clear message, not a trace
            print(f"pipelined check: {exc}", file=sys.stderr)
            return 1
    from pipelined.graph.check import check_paths  # see run_graph

    with contextlib.redirect_stdout(sys.stderr):  # what user modules print on import
        problems, checked, invalid = check_paths(paths)
    for problem in problems:
        print(problem)
    print(summary(problems, checked, invalid))
    return 1 if invalid else 0


def run_graph(args: argparse.Namespace) -> int:
    if args.remote is not None:
        return int(remote_graph(args) or 0)
    if args.file is None:
        print("pipelined graph: give a pipeline FILE (or --remote NAME)", file=sys.stderr)
        return 2
    # imported here, not at the top: every command builds its parser from this module, and
    # `status`, `top`, ... must not load the pipeline loader and graph checks they never use
    from pipelined.graph.check import linked_from_siblings, load_pipeline, without_linked_warnings

    with contextlib.redirect_stdout(sys.stderr):
        spec, problems = load_pipeline(args.file)
    for problem in without_linked_warnings(problems, linked_from_siblings(args.file)):
        print(problem, file=sys.stderr)
    if spec is None:
        return 1
    with contextlib.redirect_stdout(sys.stderr):
        text = graph_text(spec, args.format)
    sys.stdout.write(text)
    return 0


def graph_text(spec: PipelineSpec, fmt: str) -> str:
    """What `pipelined graph` prints for a valid spec: mermaid, dot or json (newline-terminated)."""
    from pipelined.config.callables import is_async_callable  # see run_graph
    from pipelined.graph.limits import allocate
    from pipelined.graph.render import render_dot, render_json, render_mermaid
    from pipelined.graph.routing import build_graph

    graph = build_graph(spec).graph
    allocation = allocate(
        spec, graph, None, None, lambda stage: is_async_callable(stage.call, spec.python_path)
    )
    if fmt == "json":
        return orjson.dumps(render_json(graph, allocation), option=orjson.OPT_INDENT_2).decode() + "\n"
    text = render_dot(graph, allocation) if fmt == "dot" else render_mermaid(graph, allocation)
    return text if text.endswith("\n") else text + "\n"
