"""Choose and build the runner of one stage: producer, accumulator, threads, async loop, processes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pipelined.calls.invoke import Invoker
from pipelined.calls.loading import load_callable
from pipelined.config.spec import StageSpec
from pipelined.engine.accumulator import AccumulatorStage
from pipelined.engine.asyncstage import AsyncStage
from pipelined.engine.book import PipelineBook
from pipelined.engine.hooks import HookSet, error_text
from pipelined.engine.processstage import ProcessStageRunner
from pipelined.engine.producer import ProducerStage
from pipelined.engine.queues import StageQueue
from pipelined.engine.raystage import RayStageRunner
from pipelined.engine.router import Target
from pipelined.engine.stage import StageServices
from pipelined.engine.threads import ThreadStage
from pipelined.errors import StartError
from pipelined.workers import ProcessStage, make_process_stage


class StageHost(StageServices, Protocol):
    """What building a stage needs of its runtime (`PipelineRuntime` is the one), besides the
    services the stage itself uses."""

    @property
    def book(self) -> PipelineBook: ...

    @property
    def queues(self) -> Mapping[str, StageQueue]: ...

    def threads_of(self, stage: StageSpec) -> int: ...

    def processes_of(self, stage: StageSpec) -> int: ...


def build_stage(rt: StageHost, spec: StageSpec, target: Target, hooks: HookSet) -> Any:
    stage = _build(rt, spec, target, hooks)
    if (spec.rate_limit is not None or spec.concurrency is not None) and hasattr(stage, "use_gate"):
        fork_per_item = spec.uses_processes and spec.process_mode == "fork_per_item"
        # an async stage caps its own coroutine slots at `concurrency` (asyncstage.py)
        gate = rt.book.gate(spec, slots=not isinstance(stage, AsyncStage), one_item_per_slot=fork_per_item)
        if gate is not None:
            stage.use_gate(gate)
    return stage


def _build(rt: StageHost, spec: StageSpec, target: Target, hooks: HookSet) -> Any:
    counters = rt.book.counters(spec.name)
    where = f"pipeline {rt.spec.name!r}, stage {spec.name!r}"
    if spec.kind == "accumulator":
        return AccumulatorStage(rt, spec, rt.queues[spec.name], target, counters)
    if spec.uses_ray:  # processors and consumers only (config/executor.py)
        return RayStageRunner(rt, spec, rt.queues[spec.name], target, counters)
    if spec.uses_processes and spec.kind != "producer":
        return ProcessStageRunner(rt, spec, rt.queues[spec.name], target, counters, rt.processes_of(spec),
                                  _takes_ctx(rt, spec))  # fmt: skip
    if not spec.call:
        raise StartError(f"{where}: no 'call' to run")
    try:
        obj = load_callable(spec.call, rt.spec.python_path)
    except Exception as exc:
        raise StartError(f"{where}: cannot import call = {spec.call!r}: {error_text(exc)}") from exc

    def make_invoker() -> Invoker:
        return Invoker(rt.spec, spec, obj, stopping=rt.stopping)

    workers = rt.threads_of(spec)
    if spec.kind == "producer":
        if not spec.uses_processes:
            return ProducerStage(rt, spec, target, counters, workers, make_invoker, hooks)
        processes = rt.processes_of(spec)

        def make_pool() -> ProcessStage:
            return make_process_stage(rt.spec, spec, processes)

        return ProducerStage(rt, spec, target, counters, processes, make_invoker, hooks, make_pool)
    if make_invoker().is_async:
        concurrency = max(1, spec.threads or 1)  # an async stage's concurrency is never cut
        return AsyncStage(rt, spec, rt.queues[spec.name], target, counters, concurrency, make_invoker)
    return ThreadStage(rt, spec, rt.queues[spec.name], target, counters, workers, make_invoker)


def _takes_ctx(rt: StageHost, spec: StageSpec) -> bool:
    """Does a process stage's callable take `ctx`? (Its module was imported when the file was
    checked; one that does not import here fails in its workers, with their error.)"""
    if not spec.call:
        return False
    try:
        return Invoker(rt.spec, spec, load_callable(spec.call, rt.spec.python_path)).wants_ctx
    except Exception:
        return False
