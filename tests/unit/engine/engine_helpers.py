"""Build specs, graphs and started runtimes for the engine tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelined.config.spec import Hooks, PipelineSpec, StageSpec
from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.graph.routing import build_graph

HERE = Path(__file__).resolve().parent
FNS = "engine_stagefns"


def stage(name: str, kind: str = "processor", call: str | None = None, **kw: Any) -> StageSpec:
    if call is not None and ":" not in call:
        call = f"{FNS}:{call}"
    return StageSpec(name=name, kind=kind, call=call, **kw)  # type: ignore[arg-type]


def hooks(**refs: str) -> Hooks:
    return Hooks(**{k: f"{FNS}:{v}" for k, v in refs.items()})


def pipeline(*stages: StageSpec, name: str = "p", **kw: Any) -> PipelineSpec:
    return PipelineSpec(
        name=name, file=HERE / f"{name}.toml", version="0123456789ab", stages=stages,
        python_path=(HERE,), **kw,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@contextmanager
def running(
    spec: PipelineSpec, state_dir: Path | None = None, book: PipelineBook | None = None, drain_timeout: float = 5.0
) -> Iterator[PipelineRuntime]:
    """A started runtime (no allocation: every stage gets what it asks); drained afterwards."""
    result = build_graph(spec)
    assert result.ok, [str(p) for p in result.problems]
    book = book or PipelineBook(spec.name, state_dir)
    rt = PipelineRuntime(spec, result.graph, None, book, drain_timeout=drain_timeout)
    rt.start()
    try:
        yield rt
    finally:
        if rt.state in ("running", "draining"):
            rt.drain(drain_timeout)


def finished_run(rt: PipelineRuntime, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    assert rt.book.runs.wait(run_id, timeout), rt.book.runs.get(run_id)
    return rt.book.runs.get(run_id)


def build_graph_for(spec: PipelineSpec) -> Any:
    result = build_graph(spec)
    assert result.ok, [str(p) for p in result.problems]
    return result.graph
