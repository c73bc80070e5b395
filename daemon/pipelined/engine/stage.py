"""What every queue-fed stage shares: its queue, outputs, counters, failure handling, and the
bookkeeping that lets a drain deadline take over the chunks workers still hold.

Worker flavours (threads.py, asyncstage.py, processstage.py) take chunks from the queue, call
the user code and hand the result to `complete()`, which routes outputs, schedules retries or
dead-letters failures, and settles the run — once per chunk.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from pipelined import tracing
from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.entry import EntryGate
from pipelined.engine.failurelog import FailureLog
from pipelined.engine.gate import StageGate
from pipelined.engine.hooks import error_text
from pipelined.engine.lineage import Lineage
from pipelined.engine.links import deliver_rest
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.retry import RetryTimer, backoff_delay
from pipelined.engine.router import PartlySent, Target
from pipelined.engine.runs import Run
from pipelined.errors import StartError

log = logging.getLogger("pipelined.engine")


@dataclass
class Failure:
    item: Any
    error: BaseException | None  # None when it happened in a worker process
    text: str  # "TypeName: message"
    trace: str | None = None  # formatted traceback
    index: int = -1  # its place in the chunk (for its ctx.item_id), when known


@dataclass
class Outcome:
    """What one chunk produced; `done` items succeeded (outputs may be empty: filtered)."""

    outputs: list[Any] = field(default_factory=list)
    routed: list[tuple[str, Any]] = field(default_factory=list)  # ctx.emit_to pairs
    output_ids: list[int] | None = None  # ctx.item_id numbers of outputs / routed items, when tracked
    routed_ids: list[int] | None = None
    filtered: int = 0
    failures: list[Failure] = field(default_factory=list)
    finished: int = 0  # already counted at a terminal (per-item routing)
    routed_already: bool = False
    died_at: int = -1  # index of the item whose call killed the worker thread
    sent_early: int = 0  # outputs routed while the chunk was still being called (lateoutputs.py)


class StageServices(Protocol):
    """What a stage needs from its runtime."""

    spec: PipelineSpec
    retry: RetryTimer
    gate: EntryGate
    failure_log: FailureLog

    def stopping(self) -> bool: ...

    def target_for(self, stage: str, sender: str | None = None) -> Target: ...

    def dead_letter(
        self,
        stage: str,
        run: Run,
        items: list[Any],
        attempts: int,
        error: BaseException,
        *,
        text: str | None = None,
        trace: str | None = None,
        held: int = 0,
        entered: bool = True,
        lineage: Lineage | None = None,
    ) -> None: ...

    def record_latency(self, stage: str, enqueued_at: float, n: int) -> None: ...

    def has_rejecting_queue(self) -> bool: ...


REJECTED_TEXT = "QueueRejected: the queue of stage {} is full (on_full = reject)"


def refusal_text(exc: QueueRejected) -> str:
    """The error of an attempt whose results were refused: a full `on_full = "reject"` queue, or
    a link's own text (`LinkRefused.text`, e.g. "pipeline 'billing' is not running")."""
    text = getattr(exc, "text", None)
    return text if isinstance(text, str) else REJECTED_TEXT.format(exc)


def rejected_failure(item: Any, exc: QueueRejected, index: int = -1) -> Failure:
    """An item whose results a full `on_full = "reject"` queue (or a link) refused: that attempt
    failed. Logged without a traceback: the text says all, and a refusal is no bug in user code."""
    return Failure(item, exc, refusal_text(exc), trace="", index=index)


def item_id_text(run_id: str, number: int | None) -> str | None:
    """ctx.item_id: "<run>.<n>", n the number of the entered item it derives from."""
    return None if number is None else f"{run_id}.{number}"

SETUP_TIMEOUT_S = 60.0


def wait_for_setups(
    results: list[BaseException | None], ready: threading.Condition, workers: int, pipeline: str, stage: str
) -> None:
    """Block until `workers` setups reported into `results`; StartError naming the stage if any
    raised, or if they did not all return within SETUP_TIMEOUT_S (a hung setup() must not hold
    the daemon's start or a reload forever; the stuck thread is left to exit when it can)."""
    with ready:
        if not ready.wait_for(lambda: len(results) >= workers, timeout=SETUP_TIMEOUT_S):
            raise StartError(
                f"pipeline {pipeline!r}, stage {stage!r}: setup() did not return within {SETUP_TIMEOUT_S:g} s"
            )
    errors = [r for r in results if r is not None]
    if errors:
        raise StartError(
            f"pipeline {pipeline!r}, stage {stage!r}: setup failed: {error_text(errors[0])}"
        ) from errors[0]


class StageBase:
    def __init__(
        self,
        services: StageServices,
        spec: StageSpec,
        queue: StageQueue,
        target: Target,
        counters: StageCounters,
        workers: int,
    ) -> None:
        self.services = services
        self.spec = spec
        self.name = spec.name
        self.queue = queue
        self.target = target
        self.counters = counters
        self.workers = workers
        self.is_consumer = spec.kind == "consumer"
        self._held: dict[int, Chunk] = {}  # id(chunk) -> chunk being processed
        self._late: set[int] = set()  # taken just before the deadline, held after it
        self._abandoned = False
        self._lock = threading.Lock()
        self._extra = {"pipeline": services.spec.name, "stage": spec.name}
        self.gate: StageGate | None = None  # rate_limit / concurrency (engine/gate.py)

    def use_gate(self, gate: StageGate) -> None:
        """Before start: take through `gate` (the stage has a rate_limit or a concurrency)."""
        self.gate = gate

    # -- chunks held by workers -------------------------------------------------------------
    def hold(self, chunk: Chunk) -> None:
        with self._lock:
            if self._abandoned:  # nobody dead-lettered it: its result must count
                self._late.add(id(chunk))
            else:
                self._held[id(chunk)] = chunk

    def release(self, chunk: Chunk) -> bool:
        """False when the drain deadline took the chunk over (its result is discarded)."""
        with self._lock:
            if self._held.pop(id(chunk), None) is not None:
                return not self._abandoned
            if id(chunk) in self._late:
                self._late.discard(id(chunk))
                return True
            return False

    def abandon(self) -> list[Chunk]:
        """Drain deadline: the chunks workers still hold (dead-lettered by the caller)."""
        with self._lock:
            self._abandoned = True
            held = list(self._held.values())
            self._held.clear()
        if self.gate is not None:  # workers waiting for a token or a slot stop waiting
            self.gate.wake()
        return held

    def _traced(self, chunk: Chunk, current: bool = True) -> tracing.Batch:
        """The chunk's span (only called while tracing is on: `chunk.run.trace` is set)."""
        run = chunk.run
        return tracing.start_batch(run.trace, self.services.spec.name, self.name, run.id, len(chunk.items),
                                   chunk.attempts, current)  # fmt: skip

    # -- routing ----------------------------------------------------------------------------
    def routes_per_item(self, wants_ctx: bool) -> bool:
        """Route each item's results on their own (so a refusal fails just that item's attempt)
        when the downstream may refuse them (`on_full = "reject"`), or when the callable can
        `ctx.emit_to` and some queue of the pipeline may refuse."""
        if self.target.may_reject() and not self.is_consumer:
            return True
        return wants_ctx and self.services.has_rejecting_queue()

    def emit_to_checker(self, stage: str, item: Any) -> None:
        """ctx.emit_to sink used while calling: only checks the target exists."""
        self.services.target_for(stage)

    def route_item(
        self, run: Run, outputs: list[Any], routed: list[tuple[str, Any]], lineage: Lineage | None = None,
        item_id: int | None = None,
    ) -> int:
        """Route one item's results (may raise QueueRejected: that attempt fails)."""
        ids = None if item_id is None else [item_id]
        finished = 0
        if outputs and not self.is_consumer:
            try:
                finished = self.target.send(run, outputs, lineage, None if ids is None else ids * len(outputs))
            except PartlySent as partly:  # a link took its part: the attempt cannot fail now
                finished = self._deliver_rest(partly, run, lineage)
        for stage, value in routed:
            finished += self.services.target_for(stage, self.name).send(run, [value], lineage, ids)
        return finished

    # -- completing a chunk -----------------------------------------------------------------
    def complete(self, chunk: Chunk, outcome: Outcome, cell: CounterCell) -> None:
        """Route outputs, handle failures, settle the run; all for one chunk."""
        if not self.release(chunk):
            return
        run = chunk.run
        n = len(chunk.items)
        failures = outcome.failures
        finished = outcome.finished
        filtered = 0 if self.is_consumer else outcome.filtered
        if self.is_consumer:
            finished += n - len(failures)
        lineage = chunk.lineage
        if not outcome.routed_already:
            if outcome.outputs and not self.is_consumer:
                finished += self._send(run, outcome.outputs, lineage, outcome.output_ids)
            routed_ids = outcome.routed_ids
            for i, (stage, value) in enumerate(outcome.routed):
                finished += self._send_to(run, stage, value, lineage, None if routed_ids is None else routed_ids[i])
        if not self.is_consumer:
            cell.items_out += len(outcome.outputs) + len(outcome.routed) + outcome.sent_early
        if failures:
            cell.items_failed += len(failures)
            self._failed(chunk, failures)
        if self.services.spec.track_latency:
            self.services.record_latency(self.name, chunk.enqueued_at, n - len(failures))
        run.settle(leave=n - len(failures), finished=finished, filtered=filtered, lineage=lineage)

    def _send(self, run: Run, outputs: list[Any], lineage: Lineage | None = None, ids: list[int] | None = None) -> int:
        try:
            return self.target.send(run, outputs, lineage, ids)
        except QueueAbandoned:
            return 0  # drain deadline: the receiving side dead-lettered its items
        except PartlySent as partly:
            return self._deliver_rest(partly, run, lineage)

    def _deliver_rest(self, partly: PartlySent, run: Run, lineage: Lineage | None) -> int:
        """What links refused after another link took its part: retried in place, then
        dead-lettered here (links.py `deliver_rest`)."""

        def give_up(items: list[Any], attempts: int, exc: QueueRejected) -> None:
            self.services.dead_letter(
                self.name, run, items, attempts, exc, text=refusal_text(exc), entered=False, lineage=lineage
            )

        spec = self.spec
        return deliver_rest(partly, run, lineage, spec.max_retries, spec.retry_backoff, self.services.stopping, give_up)

    def _send_to(self, run: Run, stage: str, value: Any, lineage: Lineage | None, item_id: int | None) -> int:
        attempts = 1
        while True:
            try:
                target = self.services.target_for(stage, self.name)
                return target.send(run, [value], lineage, None if item_id is None else [item_id])
            except QueueAbandoned:
                return 0
            except QueueRejected as exc:  # not routed per item (see routes_per_item): never lost
                if hasattr(exc, "text") and attempts <= self.spec.max_retries and not self.services.stopping():
                    # a link named at run time only: its delivery is retried here, in place
                    time.sleep(backoff_delay(self.spec.retry_backoff, attempts))
                    attempts += 1
                    continue
                text = refusal_text(exc)
                self.services.dead_letter(
                    self.name, run, [value], attempts, exc, text=text, entered=False, lineage=lineage
                )
                return 0

    def _failed(self, chunk: Chunk, failures: list[Failure]) -> None:
        """Retry or dead-letter each failure; the log sees them through the FailureLog (the first
        of each kind whole, then summaries), the dead letter keeps the traceback."""
        run = chunk.run
        attempts = chunk.attempts + 1
        give_up = chunk.attempts >= self.spec.max_retries
        report = self.services.failure_log.failed
        headline = f"item {'dead-lettered after' if give_up else 'failed on'} attempt {attempts}"
        for failure in failures:
            report(self.name, run.id, failure.text, partial(trace_of, failure), headline=headline, gave_up=give_up)
            if give_up:
                error = failure.error or RuntimeError(failure.text)
                self.services.dead_letter(
                    self.name, run, [failure.item], attempts, error, text=failure.text, lineage=chunk.lineage,
                    trace=trace_of(failure),
                )
            else:
                ids = chunk.ids
                item_id = None if ids is None or failure.index < 0 else [ids[failure.index]]
                retry = Chunk(run, [failure.item], attempts, lineage=chunk.lineage, ids=item_id)
                delay = backoff_delay(self.spec.retry_backoff, attempts)
                self.services.retry.schedule(retry, self.queue, delay)
            forget_traceback(failure.error)


def trace_of(failure: Failure) -> str | None:
    """The failure's formatted traceback (made once, from the exception when it is here)."""
    if failure.trace is None and failure.error is not None and failure.error.__traceback__ is not None:
        failure.trace = "".join(traceback.format_exception(failure.error))
    return failure.trace


def forget_traceback(error: BaseException | None) -> None:
    """Drop an exception's traceback (and its causes') once it has been reported: the traceback's
    frames hold the item and the worker's own locals, a reference cycle that would keep every
    failed item of a run alive until a full garbage collection."""
    for _ in range(8):
        if error is None:
            return
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


def failure_of(item: Any, exc: BaseException, index: int = -1) -> Failure:
    return Failure(item, exc, error_text(exc), index=index)
