"""Helpers for the worker tests: specs pointing at `userland/wstages.py`, and cleanup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.spec import Hooks, PipelineSpec, StageSpec
from pipelined.workers import ProcessStage, make_process_stage
from pipelined.workers.proctree import own_children

USERLAND = Path(__file__).parent / "userland"


def make_spec(
    call: str,
    *,
    kind: str = "processor",
    args: dict[str, Any] | None = None,
    processes: int = 2,
    process_mode: str = "pool",
    start_method: str = "forkserver",
    max_items_per_worker: int = 0,
    pipeline_hooks: Hooks | None = None,
    stage_hooks: Hooks | None = None,
) -> tuple[PipelineSpec, StageSpec]:
    stage = StageSpec(
        name="work",
        kind=kind,  # type: ignore[arg-type]
        call=f"wstages:{call}",
        args=args or {},
        processes=processes,
        process_mode=process_mode,  # type: ignore[arg-type]
        start_method=start_method,  # type: ignore[arg-type]
        max_items_per_worker=max_items_per_worker,
        hooks=stage_hooks or Hooks(),
    )
    sink = StageSpec(name="sink", kind="consumer", call="wstages:double")
    pipeline = PipelineSpec(
        name="wtest",
        file=USERLAND / "wtest.toml",
        version="0" * 12,
        stages=(stage, sink),
        python_path=(USERLAND,),
        hooks=pipeline_hooks or Hooks(),
    )
    return pipeline, stage


@pytest.fixture
def started() -> Iterator[Any]:
    """started(call, **spec_options) -> a started ProcessStage, stopped after the test."""
    stages: list[ProcessStage] = []

    def start(call: str, **options: Any) -> ProcessStage:
        pipeline, stage = make_spec(call, **options)
        process_stage = make_process_stage(pipeline, stage, stage.processes or 1)
        stages.append(process_stage)
        process_stage.start()
        return process_stage

    yield start
    for process_stage in stages:
        process_stage.stop(5.0)


@pytest.fixture(autouse=True)
def _children_before_test() -> Iterator[None]:
    """Remember this process's children before each test, for `new_children()`."""
    global _BEFORE
    _BEFORE = set(own_children())
    yield


_BEFORE: set[int] = set()


def new_children() -> list[int]:
    """Children of the test process that did not exist when the test began (other suites'
    long-lived helpers are not ours to judge); zombies count, they are children too."""
    return sorted(set(own_children()) - _BEFORE)
