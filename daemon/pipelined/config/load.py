"""Pipeline files → `PipelineSpec` plus every `Problem` (see docs/config.md).

    spec, problems = load_pipeline(Path("conf.d/orders.toml"), check_graph)
    spec, problems = parse_pipeline(toml_text, Path("conf.d/orders.toml"), check_graph)  # e.g. an API PUT body

One pass collects every problem of a file: TOML syntax (with its line), unknown keys (with a
suggestion), types and ranges, kind rules, names, then the code it names (imports, signatures,
arguments, emit_to targets) and the routing problems `check_graph(spec)` returns. The routing
rules live a layer up, in `pipelined.graph`: `pipelined.graph.check` calls these functions with
the graph builder (and holds `check_paths` for `pipelined check`). `spec` is None when there is
at least one error; warnings alone keep it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelined.config.code import check_code
from pipelined.config.lines import LineIndex
from pipelined.config.permissions import permission_problem
from pipelined.config.spec import PipelineSpec, Problem
from pipelined.config.stage import ON_FULL, STAGE_ONLY_HINTS, Inherited, StageReader, read_hooks
from pipelined.config.values import (
    Checker,
    Table,
    check_unknown_keys,
    read_bool,
    read_choice,
    read_duration,
    read_int,
    read_str,
    read_str_list,
)

PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PIPELINE_KEYS: tuple[str, ...] = (
    "description", "enabled", "max_threads", "max_processes", "max_retries", "retry_backoff",
    "queue_size", "on_full", "track_latency", "drain_timeout", "buffer", "buffer_sync", "python_path", "hooks",
    "stage", "priority_max_wait",
)  # fmt: skip
BUFFERS: tuple[str, ...] = ("memory", "disk")
BUFFER_SYNCS: tuple[str, ...] = ("normal", "full")
ROUTING_KEYS = frozenset({"name", "kind", "to", "from", "fanout", "weights", "mode", "stage"})
ROUTING_MESSAGES = ("duplicate stage name", 'missing required key "name"', "a nested pipeline needs")
GraphCheck = Callable[[PipelineSpec], Sequence[Problem]]
"""The routing problems of a valid-looking spec (errors and warnings, with file and stage)."""

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")


def is_pipeline_file(path: Path) -> bool:
    """Files a conf dir scan considers: `*.toml` not starting with `.` or `_`."""
    return path.suffix == ".toml" and not path.name.startswith((".", "_"))


def pipeline_name_problem(path: Path) -> Problem | None:
    if PIPELINE_NAME.match(path.stem):
        return None
    return Problem(
        str(path),
        path.stem,
        f'invalid pipeline name "{path.stem}": a file name must be [a-z0-9][a-z0-9_-]{{0,63}} plus ".toml"',
    )


def load_pipeline(path: Path, check_graph: GraphCheck) -> tuple[PipelineSpec | None, list[Problem]]:
    """Read and validate one pipeline file (refused unread when others may write it)."""
    refused = permission_problem(path)
    if refused is not None:
        return None, [refused]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [Problem(str(path), path.stem, f"cannot read the file: {exc.strerror or exc}")]
    return parse_pipeline(data, path, check_graph)


def parse_pipeline(
    text: str | bytes, path: Path, check_graph: GraphCheck
) -> tuple[PipelineSpec | None, list[Problem]]:
    """Validate a pipeline's TOML as if it were the file at `path` (which need not exist)."""
    raw = text.encode() if isinstance(text, str) else text
    version = hashlib.sha256(raw).hexdigest()[:12]
    name_problem = pipeline_name_problem(path)
    problems = [name_problem] if name_problem else []
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [*problems, Problem(str(path), path.stem, "the file is not valid UTF-8", line)]
    try:
        document = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        return None, [*problems, _syntax_problem(exc, path, source)]
    except RecursionError:
        return None, [*problems, Problem(str(path), path.stem, "invalid TOML: arrays or tables nested too deeply")]
    ck = Checker(str(path), path.stem, LineIndex.scan(source))
    spec = _read_pipeline(ck, document, path, version)
    routable = spec.stages and not any(_blocks_routing(p) for p in ck.problems)
    reached: set[str] = set()
    if spec.stages:
        reached, emitted_links = check_code(ck, spec)
        spec = replace(spec, emitted_links=emitted_links)
    if routable:
        _check_graph(ck, spec, reached, check_graph)
    problems.extend(ck.problems)
    problems = sorted(dict.fromkeys(problems), key=lambda p: p.line or 0)
    has_error = any(p.severity == "error" for p in problems)
    return (None if has_error else spec), problems


def _blocks_routing(problem: Problem) -> bool:
    """An error after which the graph would be built from guesses (names, kinds, edges, nesting)."""
    if problem.severity != "error":
        return False
    parts = problem.where.split("/")[1:]
    return any(part in ROUTING_KEYS for part in parts) or problem.message.startswith(ROUTING_MESSAGES)


def _syntax_problem(exc: tomllib.TOMLDecodeError, path: Path, source: str) -> Problem:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line: int | None = None
    if match:
        message = message[: match.start()]
        line = int(match.group(1)) if match.group(1) else max(1, source.count("\n") + 1)
    return Problem(str(path), path.stem, f"invalid TOML: {message}", line)


def _read_pipeline(ck: Checker, document: dict[str, Any], path: Path, version: str) -> PipelineSpec:
    top = Table(document, (), ck.pipeline)
    check_unknown_keys(ck, top, PIPELINE_KEYS, STAGE_ONLY_HINTS)
    defaults = PipelineSpec(name=ck.pipeline, file=path, version=version, stages=())
    inherited = Inherited(
        queue_size=_or(read_int(ck, top, "queue_size", 1), defaults.queue_size),
        on_full=_or(read_choice(ck, top, "on_full", ON_FULL), defaults.on_full),
        max_retries=_or(read_int(ck, top, "max_retries", 0), defaults.max_retries),
        retry_backoff=_or(read_duration(ck, top, "retry_backoff"), defaults.retry_backoff),
    )
    stages = StageReader(ck).read_stages(top, inherited, "")
    if not stages and "stage" not in document:
        ck.report(ck.pipeline, "a pipeline needs at least one [[stage]]")
    elif document.get("stage") == []:
        ck.report(f"{ck.pipeline}/stage", "a pipeline needs at least one [[stage]]", (), "stage")
    return PipelineSpec(
        name=ck.pipeline,
        file=path,
        version=version,
        stages=stages,
        description=_or(read_str(ck, top, "description"), ""),
        enabled=_or(read_bool(ck, top, "enabled"), True),
        max_threads=_or(read_int(ck, top, "max_threads", 1), defaults.max_threads),
        max_processes=_or(read_int(ck, top, "max_processes", 1), defaults.max_processes),
        max_retries=inherited.max_retries,
        retry_backoff=inherited.retry_backoff,
        queue_size=inherited.queue_size,
        on_full=inherited.on_full,  # type: ignore[arg-type]
        track_latency=_or(read_bool(ck, top, "track_latency"), False),
        drain_timeout=read_duration(ck, top, "drain_timeout", positive=True),
        buffer=_or(read_choice(ck, top, "buffer", BUFFERS), "memory"),
        buffer_sync=_buffer_sync(ck, top),
        python_path=_python_path(ck, top, path),
        hooks=read_hooks(ck, top),
        priority_max_wait=_or(read_duration(ck, top, "priority_max_wait", positive=True), defaults.priority_max_wait),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _buffer_sync(ck: Checker, top: Table) -> str:
    sync = read_choice(ck, top, "buffer_sync", BUFFER_SYNCS)
    if sync is not None and top.data.get("buffer", "memory") != "disk":
        ck.warn(top.at("buffer_sync"), 'has no effect without buffer = "disk"', (), "buffer_sync")
    return _or(sync, "normal")


def _python_path(ck: Checker, top: Table, path: Path) -> tuple[Path, ...]:
    entries = read_str_list(ck, top, "python_path") or ()
    base = path.parent.absolute()
    resolved = tuple(Path(os.path.normpath(base / entry)) for entry in entries)
    for entry, directory in zip(entries, resolved, strict=True):
        if not directory.is_dir():
            ck.warn(top.at("python_path"), f'"{entry}" is not a directory ({directory})', (), "python_path")
    return resolved


def _check_graph(ck: Checker, spec: PipelineSpec, reached: set[str], check_graph: GraphCheck) -> None:
    """Merge the routing problems; `reached`: stages fed by `ctx.emit_to("literal")`, for which
    "no stage sends to" is not true (the check found the call that does)."""
    try:
        routing_problems = check_graph(spec)
    except Exception as exc:  # noqa: BLE001 - check must report, never crash
        ck.report(ck.pipeline, f"internal error while building the graph: {exc!r}")
        return
    ck.problems.extend(
        _with_key_line(ck, problem)
        for problem in routing_problems
        if not (
            problem.severity == "warning"
            and problem.message.startswith("no stage sends to")
            and problem.where.split("/")[-1] in reached
        )
    )


def _with_key_line(ck: Checker, problem: Problem) -> Problem:
    """Point a routing problem about `pipeline/stage/key` at the key's own line when known."""
    parts = problem.where.split("/")
    if len(parts) != 3 or parts[1] not in ck.stage_tables:
        return problem
    line = ck.lines.key_line(ck.stage_tables[parts[1]], parts[2])
    return replace(problem, line=line) if line else problem

