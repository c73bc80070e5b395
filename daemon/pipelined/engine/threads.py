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
import time
from collections.abc import Callable
from typing import Any

from pipelined.calls.invoke import Invoker
from pipelined.config.spec import StageSpec
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.hooks import error_text
from pipelined.engine.queues import Chunk, QueueRejected, StageQueue
from pipelined.engine.router import Target
from pipelined.engine.runs import Run
from pipelined.engine.stage import (
    Failure,
    Outcome,
    StageBase,
    StageServices,
    failure_of,
    rejected_failure,
    wait_for_setups,
)
from pipelined.logcontext import enter_log_context, exit_log_context

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 1024
CALL_BUDGET_S = 0.01  # a worker takes about this much work at once: outputs of slow items flow on
INLINE_MAX_S = 20e-6  # a stage this fast per item may run in its sender's thread
_FAILED = object()  # marks a failed item's place among map() results


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
        self._exclusive = threading.Lock() if workers == 1 else None
        self._inline: tuple[Invoker, Callable[[Any], Any] | None, CounterCell] | None = None
        self._per_item = self.routes_per_item(make_invoker().wants_ctx)
        self.per_item_s: float | None = None  # moving average of time per item in the callable
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
        wait_for_setups(results, ready, self.workers, self.services.spec.name, self.name)

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
        queue = self.queue
        exclusive = self._exclusive
        # `chunk` is dropped before waiting for the next one: a worker waiting on its queue must
        # not keep the last chunk (its items, the run) alive after that run has ended
        if exclusive is None:
            while (chunk := queue.take(self._take_limit(), sharers=self.workers)) is not None:
                died = self._process(chunk, invoker, fast, cell)
                del chunk
                if died:
                    raise WorkerDied(self.name)
            return
        self._inline = (invoker, fast, self.counters.cell())
        try:
            while queue.wait_available():
                with exclusive:
                    chunk = queue.take_nowait(self._take_limit())
                    died = chunk is not None and self._process(chunk, invoker, fast, cell)
                    del chunk
                    if died:
                        raise WorkerDied(self.name)
        finally:
            with exclusive:
                inline, self._inline = self._inline, None
                self.counters.retire(inline[2])

    def _take_limit(self) -> int:
        """How many queued items a worker takes at once: ~CALL_BUDGET_S of work, 1 to MAX_TAKE.

        Outputs of a chunk go downstream when the chunk is done, so a slow stage takes few items
        (its outputs keep flowing, and a drain deadline finds little in its hands), a fast one
        takes many (per-chunk costs vanish). Before the first call nothing is known: one item.
        """
        per_item = self.per_item_s
        if per_item is None:
            return 1
        if per_item <= CALL_BUDGET_S / MAX_TAKE:
            return MAX_TAKE
        return max(1, int(CALL_BUDGET_S / per_item))

    def try_inline(self, run: Run, items: list[Any]) -> bool:
        """Process a chunk in the sender's thread (execution affinity).

        Only for a one-thread stage whose calls have been fast (under INLINE_MAX_S per item).
        Under the lock its worker holds per chunk, the sender first processes whatever is
        queued (order kept), then its own chunk, with the stage's own instance — so the
        instance is never called concurrently and a chain of fast stages runs in one thread.
        """
        per_item = self.per_item_s
        exclusive = self._exclusive
        if exclusive is None or per_item is None or per_item > INLINE_MAX_S:
            return False
        with exclusive:
            inline = self._inline
            if inline is None or self.queue.closed or self.queue.abandoned:
                return False
            invoker, fast, cell = inline
            while (queued := self.queue.take_nowait(MAX_TAKE)) is not None:
                self._process(queued, invoker, fast, cell)
            self._process(Chunk(run, items), invoker, fast, cell)
            return True

    def _process(self, chunk: Chunk, invoker: Invoker, fast: Callable[[Any], Any] | None, cell: CounterCell) -> bool:
        """Call the chunk and complete it; True when the call killed the thread."""
        self.hold(chunk)
        n = len(chunk.items)
        if chunk.attempts:  # a retry: counted once in items_in, when it was first taken
            cell.items_retried += n
        else:
            cell.items_in += n
        began = cell.begin()
        outcome = Outcome()
        logged = enter_log_context(self.services.spec.name, self.name, chunk.run.id)  # user code's log lines
        traced = None if chunk.run.trace is None else self._traced(chunk)
        try:
            if fast is not None and not self._per_item:
                self._call_fast(fast, chunk.items, outcome)
            else:
                self._call_each(invoker, chunk, outcome, self._per_item)
        except BaseException as exc:
            cell.end(began)
            self._died(chunk, outcome, exc, cell)
            return True
        finally:
            exit_log_context(logged)
            if traced is not None:
                traced.end(len(outcome.failures))
        took = time.perf_counter() - began
        cell.end(began)
        per_item = took / max(1, n)
        self.per_item_s = per_item if self.per_item_s is None else 0.8 * self.per_item_s + 0.2 * per_item
        self.complete(chunk, outcome, cell)
        return False

    def _call_fast(self, fn: Callable[[Any], Any], items: list[Any], outcome: Outcome) -> None:
        """map() in C over the chunk; a raising item leaves a marker and the map resumes after it."""
        results: list[Any] = []
        failures = outcome.failures
        rest = iter(items)
        while True:
            try:
                results.extend(map(fn, rest))
                break
            except Exception as exc:
                failures.append(failure_of(items[len(results)], exc))
                results.append(_FAILED)
            except BaseException:
                outcome.died_at = len(results)
                outcome.filtered = results.count(None)
                outcome.outputs = [r for r in results if r is not None and r is not _FAILED]
                raise
        if self.is_consumer:
            return
        if failures or None in results:
            outcome.filtered = results.count(None)
            outcome.outputs = [r for r in results if r is not None and r is not _FAILED]
        else:
            outcome.outputs = results

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
                outcome.failures.append(rejected_failure(item, exc))
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
        if rest:  # not called: they are taken (and counted) again
            if chunk.attempts:
                cell.items_retried -= len(rest)
            else:
                cell.items_in -= len(rest)
            self.queue.put(Chunk(chunk.run, rest, chunk.attempts), force=True)
        chunk.items = items[: index + 1]
        outcome.failures.append(Failure(items[index], exc, error_text(exc)))
        self.complete(chunk, outcome, cell)
