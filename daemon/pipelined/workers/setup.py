"""`WorkerSetup`: the plain, picklable description of a stage that a worker process starts from,
and the imports and hooks that run around a fork (`run_before_fork`, `run_after_fork`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelined.calls.loading import load_callable
from pipelined.config.linkref import split_link
from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.errors import StartError


@dataclass(frozen=True)
class WorkerSetup:
    pipeline: str
    stage: str
    kind: str
    call: str
    args: dict[str, Any]
    python_path: tuple[str, ...]
    after_fork: tuple[tuple[str, str], ...]  # (where, "module:function"): pipeline hook, then stage hook
    stage_names: frozenset[str]  # valid ctx.emit_to targets
    log_level: int
    pipeline_spec: PipelineSpec
    stage_spec: StageSpec


def worker_setup(pipeline_spec: PipelineSpec, stage_spec: StageSpec) -> WorkerSetup:
    if not stage_spec.call:
        raise StartError(f"{pipeline_spec.file}: {pipeline_spec.name}/{stage_spec.name}: no `call` to run")
    hooks = _hook_refs(pipeline_spec, stage_spec, "after_fork")
    return WorkerSetup(
        pipeline=pipeline_spec.name,
        stage=stage_spec.name,
        kind=stage_spec.kind,
        call=stage_spec.call,
        args=dict(stage_spec.args),
        python_path=tuple(str(p) for p in pipeline_spec.python_path),
        after_fork=hooks,
        stage_names=frozenset(s.name for s in pipeline_spec.walk()),
        log_level=logging.getLogger().getEffectiveLevel(),
        pipeline_spec=pipeline_spec,
        stage_spec=stage_spec,
    )


def is_emit_target(name: str, stage_names: frozenset[str]) -> bool:
    """A valid `ctx.emit_to` target: a stage of this pipeline, or a link "pipeline/stage" (the
    daemon delivers it, or fails that attempt when the other pipeline cannot take it)."""
    return name in stage_names or split_link(name) is not None


def _hook_refs(pipeline_spec: PipelineSpec, stage_spec: StageSpec, hook: str) -> tuple[tuple[str, str], ...]:
    refs: list[tuple[str, str]] = []
    pipeline_ref = getattr(pipeline_spec.hooks, hook)
    if pipeline_ref:
        refs.append((f"pipeline hook {hook} '{pipeline_ref}'", pipeline_ref))
    stage_ref = getattr(stage_spec.hooks, hook)
    if stage_ref:
        refs.append((f"stage hook {hook} '{stage_ref}'", stage_ref))
    return tuple(refs)


def add_python_path(python_path: Iterable[str]) -> None:
    for entry in reversed(list(python_path)):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def import_ref(ref: str, python_path: Iterable[str] = ()) -> Any:
    """Import `package.module:attr` (attr may be dotted) with `python_path` on sys.path."""
    add_python_path(python_path)
    return load_callable(ref, [Path(entry) for entry in python_path])


def run_hooks(refs: Iterable[tuple[str, str]], python_path: Iterable[str]) -> None:
    """Call each hook with no arguments; raises HookFailed naming the hook that raised."""
    for where, ref in refs:
        try:
            hook: Callable[[], Any] = import_ref(ref, python_path)
            hook()
        except Exception as exc:
            raise HookFailed(where, exc) from exc


class HookFailed(Exception):
    def __init__(self, where: str, cause: BaseException) -> None:
        self.where = where
        self.cause = cause
        super().__init__(f"{where} failed: {type(cause).__name__}: {cause}")


def run_before_fork(pipeline_spec: PipelineSpec, stage_specs: Iterable[StageSpec]) -> None:
    """Run `before_fork` in the daemon: the pipeline hook once, then each stage's hook.

    Raises StartError naming the pipeline, stage and hook. `ProcessStage.start()` runs this for
    its own stage unless started with `run_before_fork=False`.
    """
    python_path = [str(p) for p in pipeline_spec.python_path]
    stages = list(stage_specs)
    refs: list[tuple[str, str]] = []
    if pipeline_spec.hooks.before_fork:
        refs.append((f"pipeline hook before_fork '{pipeline_spec.hooks.before_fork}'", pipeline_spec.hooks.before_fork))
    for stage in stages:
        if stage.hooks.before_fork:
            refs.append((f"stage '{stage.name}' hook before_fork '{stage.hooks.before_fork}'", stage.hooks.before_fork))
    try:
        run_hooks(refs, python_path)
    except HookFailed as failure:
        names = ", ".join(f"'{s.name}'" for s in stages)
        raise StartError(
            f"{pipeline_spec.file}: {pipeline_spec.name}: stage {names}: {failure}"
        ) from failure.cause
