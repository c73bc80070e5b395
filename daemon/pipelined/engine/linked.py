"""Linked runs: items that another pipeline's run sends here over a link.

The first items of a sending run (its `parent`, "<pipeline>/<run id>") start a linked run at
the target stage, like a trigger with `items`; later items of the same parent and stage *join*
that run while it is running. A linked run ends like an injected one, when nothing of it is in
flight, so when the sender is slower than this pipeline it may end between two deliveries: the
next items then start a new linked run with the same `parent`. A version that is reloaded or
drained takes no more items; its linked runs end there and the next version starts new ones.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.engine.hooks import HookSet
from pipelined.engine.runs import Run
from pipelined.errors import BadRequest, Conflict, NotFound, QueueFull, Unavailable


class LinkedHost(Protocol):
    """What the linked runs need from their runtime (`PipelineRuntime`)."""

    spec: PipelineSpec
    state: str
    hooks: HookSet | None

    def put_injected(self, stage: str, run: Run, items: list[Any]) -> None: ...

    def new_run(self, stage: str, parent: str | None = None) -> Run: ...

    def forget_run(self, run: Run) -> None: ...


class LinkedRuns:
    """(parent, stage) → the running linked run that more items of that parent join."""

    def __init__(self, host: LinkedHost) -> None:
        self.host = host
        self._open: dict[tuple[str, str], Run] = {}
        self._lock = threading.Lock()  # never held while putting items (a full queue may block)

    def accept(self, stage: str, parent: str, items: list[Any], priority: int | None = None) -> str:
        """The linked run `items` joined or started; Conflict (not running), NotFound (no such
        stage), BadRequest (a producer), QueueFull / Unavailable (no room), as for a trigger."""
        host = self.host
        self._check_stage(stage)
        if not isinstance(items, list) or not items:
            raise BadRequest(f"stage {stage!r}: a link delivers a non-empty list of items")
        n = len(items)
        key = (parent, stage)
        with self._lock:
            run = self._open.get(key)
            joined = run is not None and run.join(n)
        if joined and run is not None:
            try:
                host.put_injected(stage, run, items)
            except (QueueFull, Unavailable):
                run.settle(leave=n, produced=-n)
                raise
            return run.id
        return self._start(stage, parent, items, priority)

    def _check_stage(self, stage: str) -> StageSpec:
        where = f"pipeline {self.host.spec.name!r}"
        state = self.host.state
        if state != "running":
            raise Conflict(f"{where} is {state}: it takes no items")
        spec = self.host.spec.stage(stage)
        if spec is None:
            raise NotFound(f"{where} has no stage {stage!r}")
        if spec.kind == "producer":
            raise BadRequest(f"{where}, stage {stage!r} is a producer: it takes no items")
        return spec

    def _start(self, stage: str, parent: str, items: list[Any], priority: int | None) -> str:
        host = self.host
        run = host.new_run(stage, parent)
        if priority is not None and hasattr(run, "priority"):
            run.priority = priority
        hooks = host.hooks
        error = hooks.before_run(run.to_dict()) if hooks is not None and hooks.has_run_hooks else None
        if error is not None:
            run.source_finished(error)  # a failed linked run, and this delivery refused
            raise Unavailable(f"stage {stage!r}: before_run failed: {error}")
        n = len(items)
        run.settle(produced=n, enter=n)
        try:
            host.put_injected(stage, run, items)
        except (QueueFull, Unavailable):
            host.forget_run(run)
            raise
        run.source_finished()
        with self._lock:
            if run.state == "running":  # else it ended already (and `ended` found nothing to remove)
                self._open[(parent, stage)] = run
        return run.id

    def ended(self, run: Run) -> None:
        """A linked run ended: later items of its parent start a new one."""
        if run.parent is None:
            return
        with self._lock:
            key = (run.parent, run.stage)
            if self._open.get(key) is run:
                del self._open[key]

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)
