"""Triggers: a run started at a producer (its args bound, its thread given the run) or at a
queue-fed stage (its items injected into every queue they reach, all or none, within
INJECT_TIMEOUT). Errors are the API's: BadRequest, Conflict, NotFound, QueueFull, Unavailable.
Items of a pipeline that stores them or numbers them go through durable.py instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelined.engine.durable import inject_durably
from pipelined.engine.queues import QueueAbandoned, QueueRejected
from pipelined.engine.router import inject
from pipelined.engine.runs import Run
from pipelined.errors import BadRequest, Conflict, NotFound, QueueFull, Unavailable

PipelineRuntime = Any  # engine/runtime.py's, which imports this module

INJECT_TIMEOUT = 5.0


def trigger(
    rt: PipelineRuntime,
    stage: str,
    args: Mapping[str, Any] | None = None,
    items: list[Any] | None = None,
    priority: int | None = None,
) -> str:
    """Start a run at `stage`; its id (PipelineRuntime.trigger has the contract)."""
    where = f"pipeline {rt.spec.name!r}"
    rt._check_running()
    spec = rt.spec.stage(stage)
    if spec is None:
        raise NotFound(f"{where} has no stage {stage!r}")
    where = f"{where}, stage {stage!r}"
    if spec.kind == "producer":
        if items is not None:
            raise BadRequest(f"{where} is a producer: give 'args', not 'items'")
        if args is not None and not isinstance(args, Mapping):
            raise BadRequest(f"{where}: 'args' must be an object")
        producer = rt.producers[stage]
        call_args = producer.binder.bind_producer_args(args)
        with rt._state_lock:
            rt._check_running()
            run = rt._new_run(stage, spec.priority if priority is None else priority)
        rt.gate.begin_run(run, "producer")
        if not producer.submit(run, call_args):  # the drain stopped the producer meanwhile
            rt._forget_run(run)
            raise Conflict(f"pipeline {rt.spec.name!r} is draining: it takes no triggers")
        return str(run.id)
    if args is not None:
        raise BadRequest(f"{where} is a {spec.kind}: give 'items', not 'args'")
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{where}: 'items' must be a non-empty list")
    with rt._state_lock:
        rt._check_running()
        run = rt._new_run(stage, priority or 0)
    return inject_items(rt, run, stage, list(items))


def inject_items(rt: PipelineRuntime, run: Run, stage: str, items: list[Any]) -> str:
    """A trigger's items into `stage` (and every queue they reach): all or none."""
    if rt.gate.buffer is not None or rt.gate.track_ids:  # stored first / numbered
        return inject_durably(rt, run, stage, items, INJECT_TIMEOUT)
    where = f"pipeline {rt.spec.name!r}, stage {stage!r}"
    assert rt.hooks is not None
    error = rt.hooks.before_run(run.to_dict()) if rt.hooks.has_run_hooks else None
    if error is not None:
        run.source_finished(error)
        return run.id
    n = len(items)
    run.settle(produced=n, enter=n)  # in flight while they are handed over
    try:  # into every queue they reach (a nested pipeline's children), or into none
        finished = inject(rt._targets[stage], run, items, INJECT_TIMEOUT)
    except QueueRejected as exc:
        rt._forget_run(run)
        queue = rt.queues[str(exc)]
        whose = "its queue" if queue.stage == stage else f"the queue of stage {queue.stage!r}"
        raise QueueFull(
            f"{where}: {whose} has no room for {n} items "
            f"({queue.depth}/{queue.capacity} queued, on_full = \"reject\")"
        ) from None
    except TimeoutError as exc:
        rt._forget_run(run)
        whose = "" if str(exc) == stage else f" into stage {str(exc)!r}"
        raise Unavailable(
            f"{where}: could not enqueue {n} items{whose} within {INJECT_TIMEOUT:g} s "
            f"(queue full, on_full = \"block\")"
        ) from None
    except QueueAbandoned:  # the drain deadline passed while it waited for room: none got in
        rt._forget_run(run)
        raise Unavailable(
            f"{where}: the pipeline drained before there was room for {n} items; none was accepted"
        ) from None
    run.settle(leave=n, finished=finished)
    run.source_finished()
    return run.id
