"""Linked runs: items that another pipeline's run sends here over a link.

The first items of a sending run (its `parent`, "<pipeline>/<run id>") start a linked run at
the target stage, like a trigger with `items`; later items of the same parent and stage *join*
it. The linked run takes items until its parent has ended (the sender subscribes it to that
end: `Run.on_end`), then ends like an injected run once nothing of it is in flight — so there
is one linked run per sending run and link. A version that drains (a drain, a reload, the
daemon's stop) stops taking items: its open linked runs end when their items are done, and
later items of the same parent start a new linked run (same `parent`) in the next version.
Without a subscription (`on_parent_end` None) a linked run ends whenever nothing of it is in
flight, and the next items start another one.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.engine.hooks import HookSet
from pipelined.engine.runs import Run
from pipelined.errors import BadRequest, Conflict, NotFound, QueueFull, Unavailable

Subscribe = Callable[[Callable[[], None]], None]  # the sending run's `on_end`
Key = tuple[str, str]  # (parent, stage)
START_WAIT_S = 6.0  # a delivery waits this long for another one starting the same linked run


class LinkedHost(Protocol):
    """What the linked runs need from their runtime (`PipelineRuntime`)."""

    spec: PipelineSpec
    state: str
    hooks: HookSet | None

    def deliver_linked(self, run: Run, stage: str, items: list[Any], first: int) -> None: ...

    def new_running_run(self, stage: str, parent: str, priority: int) -> Run: ...

    def forget_run(self, run: Run) -> None: ...


class LinkedRuns:
    """(parent, stage) → the open linked run that more items of that parent join."""

    def __init__(self, host: LinkedHost) -> None:
        self.host = host
        self._open: dict[Key, Run] = {}
        self._next: dict[str, int] = {}  # open run id → the number its next item gets
        self._starting: dict[Key, threading.Event] = {}
        self._closed = False
        self._stages: dict[str, StageSpec] = {}  # found by name (the spec never changes)
        self._lock = threading.Lock()  # never held while putting items or calling hooks

    def accept(
        self, stage: str, parent: str, items: list[Any], priority: int | None, on_parent_end: Subscribe | None
    ) -> str:
        """The linked run `items` joined or started; Conflict (not running), NotFound (no such
        stage), BadRequest (a producer), QueueFull / Unavailable (no room), as for a trigger."""
        self._check_stage(stage)
        if not isinstance(items, list) or not items:
            raise BadRequest(f"stage {stage!r}: a link delivers a non-empty list of items")
        n = len(items)
        key = (parent, stage)
        while True:
            with self._lock:
                run = self._open.get(key)
                if run is not None and run.join():  # pinned: it cannot end before this delivery
                    first = self._next[run.id]
                    self._next[run.id] = first + n
                    break
                starting = self._starting.get(key)
                if starting is None:
                    self._starting[key] = threading.Event()
            if starting is None:
                return self._start(key, items, priority, on_parent_end)
            if not starting.wait(START_WAIT_S):  # the other start is stuck (a full queue): start another
                return self._start(key, items, priority, on_parent_end, mine=False)
        try:
            self.host.deliver_linked(run, stage, items, first)
        finally:
            run.settle(leave=1)  # the pin
        return run.id

    def _check_stage(self, stage: str) -> StageSpec:
        where = f"pipeline {self.host.spec.name!r}"
        state = self.host.state
        if state != "running":
            raise Conflict(f"{where} is {state}: it takes no items")
        spec = self._stages.get(stage)
        if spec is None:
            spec = self.host.spec.stage(stage)
            if spec is not None:
                self._stages[stage] = spec
        if spec is None:
            raise NotFound(f"{where} has no stage {stage!r}")
        if spec.kind == "producer":
            raise BadRequest(f"{where}, stage {stage!r} is a producer: it takes no items")
        return spec

    def _start(
        self, key: Key, items: list[Any], priority: int | None, on_parent_end: Subscribe | None, mine: bool = True
    ) -> str:
        """A new linked run for `key` with `items` (this thread holds `_starting[key]` if `mine`)."""
        host, (parent, stage), n = self.host, key, len(items)
        try:
            # Conflict if it began draining meanwhile; the sending run's priority is taken over
            run = host.new_running_run(stage, parent, priority or 0)
            hooks = host.hooks
            error = hooks.before_run(run.to_dict()) if hooks is not None and hooks.has_run_hooks else None
            if error is not None:
                run.source_finished(error)  # a failed linked run, and this delivery refused
                raise Unavailable(f"stage {stage!r}: before_run failed: {error}")
            try:
                host.deliver_linked(run, stage, items, 1)
            except (BadRequest, QueueFull, Unavailable):
                host.forget_run(run)
                raise
            self._open_run(key, run, on_parent_end, n + 1)
            return run.id
        finally:
            if mine:
                with self._lock:
                    self._starting.pop(key).set()

    def _open_run(self, key: Key, run: Run, on_parent_end: Subscribe | None, following: int) -> None:
        """Keep `run` open for more items of its parent until the parent ends (or this version
        drains); without a subscription it ends as soon as nothing of it is in flight."""
        with self._lock:
            keep = on_parent_end is not None and not self._closed
            if keep:
                self._open[key] = run
                self._next[run.id] = following
        if not keep or on_parent_end is None:
            run.source_finished()
            return
        on_parent_end(_ParentEnded(self, key, run))

    def close(self, key: Key, run: Run) -> None:
        """The parent of `run` ended (or this version drains): no more items; it ends when done."""
        with self._lock:
            if self._open.get(key) is run:
                del self._open[key]
            self._next.pop(run.id, None)
        run.source_finished()

    def close_all(self) -> None:
        """This version drains: every open linked run takes no more items."""
        with self._lock:
            self._closed = True
            runs, self._open = list(self._open.items()), {}
            self._next.clear()
        for _, run in runs:
            run.source_finished()

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)


class _ParentEnded:
    """The callback a sending run calls when it ends; holds its LinkedRuns weakly, so a long
    sending run does not keep the drained versions of the pipelines it fed alive."""

    __slots__ = ("linked", "key", "run")

    def __init__(self, linked: LinkedRuns, key: Key, run: Run) -> None:
        self.linked = weakref.ref(linked)
        self.key = key
        self.run = run

    def __call__(self) -> None:
        linked = self.linked()
        if linked is not None:
            linked.close(self.key, self.run)
        else:
            self.run.source_finished()
