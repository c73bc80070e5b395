"""A processor or consumer run by N long-lived threads calling a sync callable.

Each thread owns its Invoker (a class is instantiated per worker) and its counter cell, takes
whatever its queue holds in one step and runs the chunk in a tight loop (a plain function
without ctx is called directly). A thread that dies unexpectedly (a BaseException escaping user
code) is replaced; the item it was calling counts as a failed attempt and the rest of its chunk
goes back to the queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.hooks import error_text
from pipelined.engine.invoke import Invoker
from pipelined.engine.queues import Chunk, QueueRejected, StageQueue
from pipelined.engine.router import Target
from pipelined.engine.stage import Failure, Outcome, StageBase, StageServices, failure_of
from pipelined.errors import StartError
from pipelined.spec import StageSpec

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 1024


class WorkerDied(Exception):
    """A BaseException escaped the user callable; the thread is replaced."""


class ThreadStage(StageBase):
    def __init__(
        self,
        services: StageServices,
        spec: StageSpec,
        queue: StageQueue,
        target: Target,
        counters: StageCounters,
        workers: int,
        make_invoker: Callable[[], Invoker],
    ) -> None:
        super().__init__(services, spec, queue, target, counters, workers)
        self.make_invoker = make_invoker
        self._threads: list[threading.Thread] = []
        self._started = 0
        self._threads_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start every worker; StartError (naming the stage) if a setup() raises."""
        results: list[BaseException | None] = []
        ready = threading.Condition()
        for _ in range(self.workers):
            self._spawn(results, ready)
        with ready:
            ready.wait_for(lambda: len(results) == self.workers)
        errors = [r for r in results if r is not None]
        if errors:
            raise StartError(
                f"pipeline {self.services.spec.name!r}, stage {self.name!r}: "
                f"setup failed: {error_text(errors[0])}"
            ) from errors[0]

    def _spawn(
        self, results: list[BaseException | None] | None, ready: threading.Condition | None
    ) -> None:
        with self._threads_lock:
            self._started += 1
            name = f"{self.services.spec.name}:{self.name}:{self._started}"
            thread = threading.Thread(target=self._run, args=(results, ready), name=name, daemon=True)
            self._threads.append(thread)
        thread.start()

    def live_workers(self) -> int:
        with self._threads_lock:
            return sum(1 for t in self._threads if t.is_alive())

    def join(self, timeout: float | None) -> bool:
        with self._threads_lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)

    # -- one worker -------------------------------------------------------------------------
    def _run(self, results: list[BaseException | None] | None, ready: threading.Condition | None) -> None:
        invoker = self.make_invoker()
        error: BaseException | None = None
        try:
            invoker.setup()
        except BaseException as exc:
            error = exc
            log.exception("setup() failed", extra=self._extra)
        if results is not None and ready is not None:
            with ready:
                results.append(error)
                ready.notify_all()
        if error is not None:
            return
        cell = self.counters.cell()
        try:
            self._loop(invoker, cell)
        except WorkerDied:
            self._spawn(None, None)
        finally:
            self.counters.retire(cell)
            try:
                invoker.close()
            except Exception:
                log.exception("close() failed", extra=self._extra)

    def _loop(self, invoker: Invoker, cell: CounterCell) -> None:
        fast = invoker.fast_function()
        per_item = self.target.may_reject() and not self.is_consumer
        queue = self.queue
        while True:
            chunk = queue.take(MAX_TAKE, sharers=self.workers)
            if chunk is None:
                return
            self.hold(chunk)
            cell.items_in += len(chunk.items)
            if chunk.attempts:
                cell.items_retried += len(chunk.items)
            began = cell.begin()
            outcome = Outcome()
            try:
                if fast is not None and not per_item:
                    self._call_fast(fast, chunk.items, outcome)
                else:
                    self._call_each(invoker, chunk, outcome, per_item)
            except BaseException as exc:
                cell.end(began)
                self._died(chunk, outcome, exc, cell)
                raise WorkerDied(self.name) from None
            cell.end(began)
            self.complete(chunk, outcome, cell)

    def _call_fast(self, fn: Callable[[Any], Any], items: list[Any], outcome: Outcome) -> None:
        outputs = outcome.outputs
        append = outputs.append
        failures = outcome.failures
        filtered = 0
        for item in items:
            try:
                result = fn(item)
            except Exception as exc:
                failures.append(failure_of(item, exc))
                continue
            except BaseException:
                outcome.died_at = len(outputs) + filtered + len(failures)
                outcome.filtered = filtered
                raise
            if result is None:
                filtered += 1
            else:
                append(result)
        outcome.filtered = filtered

    def _call_each(self, invoker: Invoker, chunk: Chunk, outcome: Outcome, per_item: bool) -> None:
        run = chunk.run
        check = self.emit_to_checker
        outcome.routed_already = per_item
        for index, item in enumerate(chunk.items):
            routed: list[tuple[str, Any]] = []

            def sink(stage: str, value: Any, routed: list[tuple[str, Any]] = routed) -> None:
                check(stage, value)
                routed.append((stage, value))

            try:
                outputs, filtered = invoker.call_item(item, run.id, sink)
                if per_item:
                    outcome.finished += self.route_item(run, outputs, routed)
            except QueueRejected as exc:
                text = f"QueueRejected: the queue of stage {exc} is full (on_full = reject)"
                outcome.failures.append(Failure(item, exc, text))
                continue
            except Exception as exc:
                outcome.failures.append(failure_of(item, exc))
                continue
            except BaseException:
                outcome.died_at = index
                raise
            if filtered and not routed:
                outcome.filtered += 1
            outcome.outputs.extend(outputs)
            outcome.routed.extend(routed)

    def _died(self, chunk: Chunk, outcome: Outcome, exc: BaseException, cell: CounterCell) -> None:
        """Charge the item being called; complete the items before it, requeue those after."""
        index = outcome.died_at if outcome.died_at >= 0 else 0
        extra = {**self._extra, "run": chunk.run.id}
        log.error("worker thread died: %s; replacing it", error_text(exc), extra=extra)
        items = chunk.items
        rest = items[index + 1 :]
        if rest:
            self.queue.put(Chunk(chunk.run, rest, chunk.attempts), force=True)
        chunk.items = items[: index + 1]
        outcome.failures.append(Failure(items[index], exc, error_text(exc)))
        self.complete(chunk, outcome, cell)
