"""Choose and build the runner of one stage: producer, accumulator, threads, async loop, processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelined.engine.accumulator import AccumulatorStage
from pipelined.engine.hooks import HookSet, error_text
from pipelined.engine.invoke import Invoker
from pipelined.engine.loading import load_callable
from pipelined.engine.producer import ProducerStage
from pipelined.engine.router import Target
from pipelined.errors import StartError
from pipelined.spec import StageSpec

if TYPE_CHECKING:
    from pipelined.engine.runtime import PipelineRuntime


def build_stage(rt: PipelineRuntime, spec: StageSpec, target: Target, hooks: HookSet) -> Any:
    counters = rt.book.counters(spec.name)
    where = f"pipeline {rt.spec.name!r}, stage {spec.name!r}"
    if spec.kind == "accumulator":
        return AccumulatorStage(rt, spec, rt.queues[spec.name], target, counters)
    if spec.uses_processes and spec.kind != "producer":
        from pipelined.engine.processstage import ProcessStageRunner

        return ProcessStageRunner(rt, spec, rt.queues[spec.name], target, counters, rt.processes_of(spec))
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

        def make_pool() -> Any:
            from pipelined.workers import make_process_stage

            return make_process_stage(rt.spec, spec, processes)

        return ProducerStage(rt, spec, target, counters, processes, make_invoker, hooks, make_pool)
    if make_invoker().is_async:
        from pipelined.engine.asyncstage import AsyncStage

        concurrency = max(1, spec.threads or 1)  # an async stage's concurrency is never cut
        return AsyncStage(rt, spec, rt.queues[spec.name], target, counters, concurrency, make_invoker)
    from pipelined.engine.threads import ThreadStage

    return ThreadStage(rt, spec, rt.queues[spec.name], target, counters, workers, make_invoker)
