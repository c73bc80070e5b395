"""Runs: ids, item counters, end-of-run detection, and the history kept per pipeline.

A run counts its items in flight (queued, being processed, waiting for a retry, or held by an
accumulator) in one number updated per chunk, so end-of-run is exact whatever the shape of the
graph (fan-in from several senders, `ctx.emit_to`, broadcast): a run ends when its source is
done (producer returned or raised, or injected items queued) and nothing of it is in flight.
When everything still in flight is held by accumulators, the run is *quiescent*: no more items
can reach them, so the runtime flushes their partial batches.

Hooks receive the run's API dict (`Run.to_dict()`): before_run sees state "running",
after_run the final state.

A *linked run* takes items another pipeline sends over a link; `parent` names the sending run
("<pipeline>/<run id>"). Later items of the same sending run `join` it while it is running;
`on_end` tells the receiving pipeline when the sending run ended (engine/linked.py).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pipelined.engine.lineage import Lineage
from pipelined.engine.runids import RunNumbers
from pipelined.errors import NotFound

RUNS_KEPT = 1000
RUN_PREFIX = "r-"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class RunListener(Protocol):
    def run_quiescent(self, run: Run) -> None: ...

    def run_ended(self, run: Run) -> None: ...


class Run:
    """One run's state and counters; every change goes through `settle` (per chunk)."""

    def __init__(
        self,
        run_id: str,
        pipeline: str,
        stage: str,
        listener: RunListener | None,
        priority: int = 0,
        parent: str | None = None,
    ) -> None:
        self.id = run_id
        self.pipeline = pipeline
        self.stage = stage
        # -10..10: every queue serves chunks of higher-priority runs first (queues.py); a run
        # started for this one in another pipeline (a link) takes it over
        self.priority = priority
        self.parent = parent  # "<pipeline>/<run id>" of the run that sent a linked run's items
        self.state = "running"
        self.started_at = utc_now_iso()
        self.finished_at: str | None = None
        self.error: str | None = None
        self.produced = 0
        self.in_flight = 0
        self.finished = 0
        self.filtered = 0
        self.dead_lettered = 0
        self.held = 0  # items sitting in accumulator buffers (part of in_flight)
        self.recovered = False  # replayed from a disk buffer after a restart
        self.last_dead_letter_error: str | None = None
        self.source_done = False
        self.cancelled = False
        self.listener = listener
        self.trace: Any = None  # its OpenTelemetry span while tracing is on (pipelined.tracing)
        self.lock = threading.Lock()
        self._ended = threading.Event()
        self._on_end: list[Callable[[], None]] = []

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def settle(
        self,
        *,
        enter: int = 0,
        leave: int = 0,
        finished: int = 0,
        filtered: int = 0,
        dead: int = 0,
        produced: int = 0,
        hold: int = 0,
        lineage: Lineage | None = None,
    ) -> None:
        """Apply one chunk's effect: `enter` items start flight, `leave` end it, ...

        Callers add a chunk's outputs (enter) before removing its inputs (leave), so in_flight
        never reaches 0 while something of the run is still on its way. The chunk's `lineage`
        (if any) takes the same effect, before the run may end (its entry is acknowledged
        before the run's end is recorded).
        """
        with self.lock:
            self.in_flight += enter - leave
            self.finished += finished
            self.filtered += filtered
            self.dead_lettered += dead
            self.produced += produced
            self.held += hold
            verdict = self._verdict()
        if lineage is not None:
            lineage.apply(enter - leave, finished, filtered, dead, self.last_dead_letter_error if dead else None)
        self._act(verdict)

    def join(self) -> bool:
        """Pin a running linked run for one more delivery (one unit in flight, released with
        `settle(leave=1)` after it): it cannot end meanwhile. False when it has ended."""
        with self.lock:
            if self.state != "running":
                return False
            self.in_flight += 1
            return True

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once this run has ended (at once if it has); from the thread that
        ends it, after the listener. It must be quick and must not raise."""
        with self.lock:
            if self.state == "running":
                self._on_end.append(callback)
                return
        callback()

    def reset_for_replay(
        self,
        listener: RunListener,
        *,
        produced: int,
        finished: int,
        filtered: int,
        dead_lettered: int,
        last_error: str | None,
        error: str | None,
    ) -> None:
        """A run whose stored items are replayed: its counters are the stored ones (what its
        finished rows did), nothing is in flight yet, and the replay is its source."""
        with self.lock:
            self.listener = listener
            self.state = "running"
            self.finished_at = None
            self.produced, self.finished, self.filtered = produced, finished, filtered
            self.dead_lettered = dead_lettered
            self.in_flight = self.held = 0
            self.last_dead_letter_error = last_error
            self.error = error
            self.source_done = False
            self.cancelled = False

    def begin(self) -> None:
        """A queued producer run gets a producer thread: it starts now (`started_at`)."""
        with self.lock:
            if self.state == "running" and not self.produced:
                self.started_at = utc_now_iso()

    def source_finished(self, error: str | None = None, *, cancelled: bool = False) -> None:
        """The producer returned / raised / was stopped, or the injected items are queued."""
        with self.lock:
            self.source_done = True
            if error and not self.error:
                self.error = error
            self.cancelled = self.cancelled or cancelled
            verdict = self._verdict()
        self._act(verdict)

    def _verdict(self) -> str:
        if not self.source_done or self.state != "running":
            return ""
        if self.in_flight == 0:
            self.state = self._final_state()
            self.finished_at = utc_now_iso()
            return "ended"
        if self.in_flight == self.held:
            return "quiescent"
        return ""

    def _final_state(self) -> str:
        if self.dead_lettered and not self.error:
            noun = "item was" if self.dead_lettered == 1 else "items were"
            last = f" (last error: {self.last_dead_letter_error})" if self.last_dead_letter_error else ""
            self.error = f"{self.dead_lettered} {noun} dead-lettered{last}"
        if self.error:
            return "failed"
        return "cancelled" if self.cancelled else "completed"

    def _act(self, verdict: str) -> None:
        if not verdict:
            return
        if verdict == "quiescent":
            if self.listener is not None:
                self.listener.run_quiescent(self)
            return
        try:
            if self.listener is not None:
                self.listener.run_ended(self)  # counts it, calls after_run
        finally:
            self.listener = None  # the history must not keep a drained runtime alive
            self._ended.set()
            with self.lock:
                callbacks, self._on_end = self._on_end, []
            for callback in callbacks:
                callback()

    def wait(self, timeout: float | None) -> bool:
        return self._ended.wait(timeout)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "run": self.id,
                "pipeline": self.pipeline,
                "stage": self.stage,
                "priority": self.priority,
                "state": self.state,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "items": {
                    "produced": self.produced,
                    "in_flight": self.in_flight,
                    "finished": self.finished,
                    "filtered": self.filtered,
                    "dead_lettered": self.dead_lettered,
                },
                "error": self.error,
                "recovered": self.recovered,
                "parent": self.parent,
            }


class RunTracker:
    """Run ids and history of one pipeline (lives in its PipelineBook, across versions)."""

    def __init__(
        self, pipeline: str, keep: int = RUNS_KEPT, first: int = 1, state_dir: Path | None = None
    ) -> None:
        self.pipeline = pipeline
        self.keep = keep
        self._lock = threading.Lock()
        self._numbers = RunNumbers(pipeline, state_dir, first)  # never reused, crashes included
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0

    def new_run(
        self, stage: str, listener: RunListener | None, priority: int = 0, parent: str | None = None
    ) -> Run:
        with self._lock:
            run_id = f"{RUN_PREFIX}{self._numbers.take():06d}"
            run = Run(run_id, self.pipeline, stage, listener, priority, parent)
            self._runs[run_id] = run
            self.started += 1
            self._trim()
            return run

    def adopt(self, run: Run) -> None:
        """A run recovered from a disk buffer, under its own id; new ids continue after it."""
        with self._lock:
            self._runs[run.id] = run
            self._runs.move_to_end(run.id)
            self.started += 1
            number = run.id[len(RUN_PREFIX):]
            if number.isdigit():
                self._numbers.skip_to(int(number) + 1)

    def reserve(self, next_number: int) -> None:
        """Run numbers below `next_number` were used before (a disk buffer remembers them)."""
        with self._lock:
            self._numbers.skip_to(next_number)

    def find(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def record_end(self, run: Run) -> None:
        """Count a run that ended (called once per run by the runtime)."""
        with self._lock:
            if run.state == "completed":
                self.completed += 1
            elif run.state == "failed":
                self.failed += 1
            elif run.state == "cancelled":
                self.cancelled += 1
            self._trim()

    def _trim(self) -> None:
        excess = len(self._runs) - self.keep
        if excess <= 0:
            return
        for run_id in [rid for rid, r in self._runs.items() if r.ended][:excess]:
            del self._runs[run_id]

    def discard(self, run_id: str) -> None:
        """Forget a run that never started (its trigger was refused)."""
        with self._lock:
            if self._runs.pop(run_id, None) is not None:
                self.started -= 1

    def run(self, run_id: str) -> Run:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise NotFound(f"pipeline {self.pipeline!r} has no run {run_id!r}")
        return run

    def get(self, run_id: str) -> dict[str, Any]:
        """The run's API dict; NotFound for an unknown id."""
        return self.run(run_id).to_dict()

    def list(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            runs = list(reversed(self._runs.values()))
        return [r.to_dict() for r in runs]

    def active(self) -> builtins.list[Run]:  # `list` is the method above here
        with self._lock:
            return [r for r in self._runs.values() if not r.ended]

    def wait(self, run_id: str, timeout: float | None) -> bool:
        """Block until the run ended (True) or `timeout` passed (False); NotFound if unknown."""
        return self.run(run_id).wait(timeout)

    def counts(self) -> dict[str, int]:
        with self._lock:
            active = sum(1 for r in self._runs.values() if not r.ended)
            return {
                "started": self.started,
                "completed": self.completed,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "active": active,
            }


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll a cheap predicate with a deadline (used only on slow paths: drain, tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
