"""A processor or consumer run by N long-lived threads calling a sync callable.

Each thread owns its Invoker (a class is instantiated per worker) and its counter cell, takes
whatever its queue holds in one step and runs the chunk in a tight loop (a plain function
without ctx is called directly). A thread that dies unexpectedly (a BaseException escaping user
code) is replaced; the item it was calling counts as a failed attempt and the rest of its chunk
goes back to the queue.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

from pipelined.calls.invoke import Invoker
from pipelined.config.spec import StageSpec
from pipelined.engine import fusion
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.gate import StageGate
from pipelined.engine.hooks import error_text
from pipelined.engine.lateoutputs import WATCHER, InProgress
from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.router import Ids, Target, offer
from pipelined.engine.runs import Run
from pipelined.engine.stage import (
    Failure,
    Outcome,
    StageBase,
    StageServices,
    failure_of,
    item_id_text,
    rejected_failure,
    wait_for_setups,
)
from pipelined.logcontext import enter_log_context, exit_log_context

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 1024
CALL_BUDGET_S = 0.01  # a worker takes about this much work at once: outputs of slow items flow on
INLINE_MAX_S = 20e-6  # a stage this fast per item may run in its sender's thread
_FAILED = object()  # marks a failed item's place among map() results
_NOT_NONE = functools.partial(operator.is_not, None)  # identity only: never calls a value's __eq__
STOP_ITERATION_TEXT = "StopIteration: raised by the stage's function (it fails the item like any exception)"


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
        self._inline: tuple[Invoker, Callable[[Any], Any] | None, CounterCell, InProgress] | None = None
        self._per_item = self.routes_per_item(make_invoker().wants_ctx)
        self._early = not self.is_consumer and not self._per_item  # outputs may be routed mid-chunk
        self.fusible = workers == 1 and not self._per_item  # may run in a fused chain (fusion.py)
        self.per_item_s: float | None = None  # moving average of time per item in the callable
        self._threads: list[threading.Thread] = []
        self._started = 0
        self._threads_lock = threading.Lock()

    def use_gate(self, gate: StageGate) -> None:
        super().use_gate(gate)
        self._exclusive = None  # every call goes through the gate: no inline calls by senders,
        self.fusible = False  # and no fused chain

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
            log.warning("worker thread replaced (its callable raised a BaseException)", extra=self._extra)
            self._spawn(None, None)
        except BaseException:  # outside the per-item guard (an engine fault): never die silently
            log.exception("a worker thread failed; replacing it", extra=self._extra)
            self._spawn(None, None)
        finally:
            self.counters.retire(cell)
            try:
                invoker.close()
            except BaseException:
                log.exception("close() failed", extra=self._extra)

    def _loop(self, invoker: Invoker, cell: CounterCell) -> None:
        fast = invoker.fast_function()
        queue = self.queue
        exclusive = self._exclusive
        slot = self._new_slot()
        try:
            if self.gate is not None:
                self._gated_loop(self.gate, invoker, fast, cell, slot)
                return
            if exclusive is None:
                # `chunk` is dropped before waiting for the next one: a worker waiting on its queue
                # must not keep the last chunk (its items, the run) alive after that run ended
                while (chunk := queue.take(self._take_limit(), sharers=self.workers)) is not None:
                    died = self._process(chunk, invoker, fast, cell, slot)
                    del chunk
                    if died:
                        raise WorkerDied(self.name)
                return
            inline_slot = self._new_slot()
            self._inline = (invoker, fast, self.counters.cell(), inline_slot)
            try:
                while queue.wait_available():
                    with exclusive:
                        chunk = queue.take_nowait(self._take_limit())
                        died = chunk is not None and self._process(chunk, invoker, fast, cell, slot)
                        del chunk
                        if died:
                            raise WorkerDied(self.name)
            finally:
                with exclusive:
                    inline, self._inline = self._inline, None
                    self.counters.retire(inline[2])
                    WATCHER.unregister(inline_slot)
        finally:
            WATCHER.unregister(slot)

    def _new_slot(self) -> InProgress:
        slot = InProgress(self._flush_early)
        WATCHER.register(slot)
        return slot

    def _flush_early(self, slot: InProgress) -> None:
        """The watcher's: route the outputs of the chunk's finished items, if there is room."""
        if not slot.lock.acquire(blocking=False):
            return  # the worker routes them itself right now (a streaming generator)
        try:
            if not slot.active:
                return
            results = slot.results
            n = len(results)
            if n <= slot.sent:
                return
            sent = slot.sent
            part = results[sent:n]
            ids = slot.ids
            part_ids = None
            if slot.raw:
                if ids is None:
                    part = [r for r in part if r is not None and r is not _FAILED]
                else:  # one number per item: keep those of the outputs
                    kept = [i for i, r in enumerate(part, sent) if r is not None and r is not _FAILED]
                    part = [results[i] for i in kept]
                    part_ids = [ids[i] for i in kept]
            elif ids is not None:  # extended before the outputs: it holds theirs
                part_ids = ids[sent:n]
            if part:
                finished = offer(self.target, slot.run, part, slot.lineage, part_ids)
                if finished is None:  # no room downstream now: the worker routes them later
                    return
                if finished:
                    slot.run.settle(finished=finished, lineage=slot.lineage)
                slot.early += len(part)
            slot.sent = n
        finally:
            slot.lock.release()

    def _gated_loop(
        self,
        gate: StageGate,
        invoker: Invoker,
        fast: Callable[[Any], Any] | None,
        cell: CounterCell,
        slot: InProgress,
    ) -> None:
        """A stage with rate_limit / concurrency: each take holds a slot and its items' tokens."""
        while (chunk := gate.take(self.queue, self._take_limit(), self.workers)) is not None:
            try:
                died = self._process(chunk, invoker, fast, cell, slot)
            finally:
                gate.done()
            if died:
                raise WorkerDied(self.name)

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

    def try_inline(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> bool:
        """Process a chunk in the sender's thread (execution affinity).

        Only for a one-thread stage whose calls have been fast (under INLINE_MAX_S per item).
        Under the lock its worker holds per chunk, the sender first processes whatever is
        queued (order kept), then its own chunk, with the stage's own instance — so the
        instance is never called concurrently and a chain of fast stages runs in one thread.
        A chunk of a run with a priority (or any chunk while the queue holds one) is queued
        first, and everything is called in the order the queue serves it.
        """
        per_item = self.per_item_s
        exclusive = self._exclusive
        if exclusive is None or per_item is None or per_item > INLINE_MAX_S:
            return False
        queue = self.queue
        if queue.waiting and queue.depth + queue.waiting >= queue.capacity:
            return False  # a retry backlog fills the bound: the sender waits for room like any other
        with exclusive:
            inline = self._inline
            if inline is None or queue.closed or queue.abandoned:
                return False
            invoker, fast, cell, slot = inline
            # a chunk of a run with a priority, while the queue holds others, joins the queue,
            # which orders them all (a lanes queue always holds others: it is a deque when empty)
            ordered = queue.prioritized or (run.priority != 0 and queue.depth > 0)
            if ordered:
                try:
                    queue.put(Chunk(run, items, lineage=lineage, ids=ids), force=True)
                except QueueAbandoned:
                    return False
            while (queued := self.queue.take_nowait(MAX_TAKE)) is not None:
                self._process(queued, invoker, fast, cell, slot)
            if ordered:
                return True
            if fast is not None and self.fusible and run.trace is None and ids is None:
                chain = fusion.chain_from(self)
                if len(chain) > 1:
                    try:
                        fusion.run_fused(chain, run, items, lineage)
                    finally:
                        fusion.release(chain)
                    return True
            self._process(Chunk(run, items, lineage=lineage, ids=ids), invoker, fast, cell, slot)
            return True

    def fast_now(self) -> bool:
        """Its calls have been fast enough to run in a sender's thread."""
        per_item = self.per_item_s
        return per_item is not None and per_item <= INLINE_MAX_S

    def ready_to_fuse(self) -> bool:
        """With its exclusive lock held: it may join a fused chain for one chunk now."""
        inline = self._inline
        queue = self.queue
        return (
            inline is not None and inline[1] is not None and not queue.depth and queue.waiting < queue.capacity
            and not queue.closed and not queue.abandoned
        )

    def log_base_exception(self, run: Run, exc: BaseException) -> None:
        log.error("an item raised %s (not an Exception): that attempt fails", error_text(exc),
                  extra={**self._extra, "run": run.id})

    def _process(
        self, chunk: Chunk, invoker: Invoker, fast: Callable[[Any], Any] | None, cell: CounterCell, slot: InProgress
    ) -> bool:
        """Call the chunk and complete it; True when the call killed the thread.

        With more than one item, the chunk's results are shown in `slot`, so the outputs of
        finished items can be routed while a slow one is still being called (lateoutputs.py)."""
        self.hold(chunk)
        n = len(chunk.items)
        if chunk.attempts:  # a retry: counted once in items_in, when it was first taken
            cell.items_retried += n
        else:
            cell.items_in += n
        began = cell.begin()
        outcome = Outcome()
        logged = enter_log_context(self.services.spec.name, self.name, chunk.run.id)  # user code's log lines
        early = slot if self._early and n > 1 else None
        traced = None if chunk.run.trace is None else self._traced(chunk)
        try:
            if fast is not None and not self._per_item:
                self._call_fast(fast, chunk, outcome, early)
            else:
                self._call_each(invoker, chunk, outcome, self._per_item, early)
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

    def _call_fast(self, fn: Callable[[Any], Any], chunk: Chunk, outcome: Outcome, slot: InProgress | None) -> None:
        """map() in C over the chunk; a raising item leaves a marker and the map resumes after it.

        A StopIteration raised by the function ends map() as if the chunk were exhausted: the
        results then fall short of the items, and the item after the last result is the one
        that raised it (it fails like any other exception; the map resumes after it).
        Outputs are told from filtered items by identity (`is None`): a value whose `==`
        is elementwise (numpy, pandas) must never be compared."""
        items = chunk.items
        results: list[Any] = []
        if slot is not None:
            slot.start(chunk.run, results, raw=True, lineage=chunk.lineage, ids=chunk.ids)
        failures = outcome.failures
        rest = iter(items)
        n = len(items)
        try:
            while True:
                try:
                    results.extend(map(fn, rest))
                except Exception as exc:
                    failures.append(failure_of(items[len(results)], exc, len(results)))
                    results.append(_FAILED)
                    continue
                if len(results) < n:
                    failures.append(Failure(items[len(results)], StopIteration(), STOP_ITERATION_TEXT,
                                            index=len(results)))  # fmt: skip
                    results.append(_FAILED)
                    continue
                break
        except BaseException:
            outcome.died_at = len(results)
            self._take_outputs(results, outcome, slot, chunk.ids, failed=True)
            raise
        if not self.is_consumer:
            self._take_outputs(results, outcome, slot, chunk.ids, failed=bool(failures))

    @staticmethod
    def _take_outputs(
        results: list[Any], outcome: Outcome, slot: InProgress | None, ids: Ids, *, failed: bool
    ) -> None:
        """Outputs of the results the watcher did not route already; filtered items counted.
        With `ids` tracked, each output keeps the number of the item it came from."""
        sent, early = slot.finish() if slot is not None else (0, 0)
        tail = results[sent:] if sent else results
        if ids is not None:
            outcome.output_ids = [ids[i] for i, r in enumerate(tail, sent) if r is not None and r is not _FAILED]
        if failed:
            kept = [r for r in tail if r is not None and r is not _FAILED]
            failures = sum(1 for r in results if r is _FAILED)
        else:
            kept = list(filter(_NOT_NONE, tail))
            failures = 0
        outcome.outputs = kept
        outcome.sent_early = early
        outcome.filtered = len(results) - failures - early - len(kept)

    def _call_each(
        self, invoker: Invoker, chunk: Chunk, outcome: Outcome, per_item: bool, slot: InProgress | None
    ) -> None:
        if chunk.ids is not None:
            outcome.output_ids, outcome.routed_ids = [], []
        if slot is None:
            self._call_items(invoker, chunk, outcome, per_item, None)
            return
        slot.start(chunk.run, outcome.outputs, raw=False, lineage=chunk.lineage, ids=outcome.output_ids)
        try:
            self._call_items(invoker, chunk, outcome, per_item, slot)
        finally:
            sent, outcome.sent_early = slot.finish()
            if sent:
                outcome.outputs = outcome.outputs[sent:]
                if outcome.output_ids is not None:
                    outcome.output_ids = outcome.output_ids[sent:]

    def _call_items(
        self, invoker: Invoker, chunk: Chunk, outcome: Outcome, per_item: bool, slot: InProgress | None
    ) -> None:
        run = chunk.run
        check = self.emit_to_checker
        outcome.routed_already = per_item
        ids = chunk.ids
        lineage = chunk.lineage
        attempt = chunk.attempts + 1 + (lineage.replays if lineage is not None else 0)
        number: int | None = None

        def spill(part: list[Any]) -> None:
            """An item emitting many outputs (a generator): route them as they come, under
            back-pressure, after whatever earlier items of the chunk emitted (order kept)."""
            if per_item:
                outcome.finished += self.route_item(run, part, [], lineage, number)
                outcome.sent_early += len(part)
            elif slot is None:
                outcome.finished += self._send(run, part, lineage, None if number is None else [number] * len(part))
                outcome.sent_early += len(part)
            else:
                with slot.lock:  # the watcher never waits for a slot's lock
                    held = outcome.outputs[slot.sent :]
                    held_ids = None
                    if number is not None:
                        held_ids = [*outcome.output_ids[slot.sent :], *[number] * len(part)]  # type: ignore[index]
                    outcome.finished += self._send(run, held + part, lineage, held_ids)
                    slot.sent = len(outcome.outputs)
                    slot.early += len(held) + len(part)

        for index, item in enumerate(chunk.items):
            number = None if ids is None else ids[index]
            routed: list[tuple[str, Any]] = []

            def sink(stage: str, value: Any, routed: list[tuple[str, Any]] = routed) -> None:
                check(stage, value)
                routed.append((stage, value))

            try:
                outputs, filtered = invoker.call_item(
                    item, run.id, sink, spill, item_id=item_id_text(run.id, number), attempt=attempt
                )
                if per_item:
                    outcome.finished += self.route_item(run, outputs, routed, lineage, number)
            except QueueRejected as exc:
                outcome.failures.append(rejected_failure(item, exc, index))
                continue
            except Exception as exc:
                outcome.failures.append(failure_of(item, exc, index))
                continue
            except BaseException:
                outcome.died_at = index
                raise
            if filtered and not routed:
                outcome.filtered += 1
            if number is not None:  # numbers first: the watcher reads outputs[sent:n] with ids[sent:n]
                outcome.output_ids.extend([number] * len(outputs))  # type: ignore[union-attr]
                outcome.routed_ids.extend([number] * len(routed))  # type: ignore[union-attr]
            outcome.outputs.extend(outputs)
            outcome.routed.extend(routed)

    def _died(self, chunk: Chunk, outcome: Outcome, exc: BaseException, cell: CounterCell) -> None:
        """Charge the item being called; complete the items before it, requeue those after."""
        index = outcome.died_at if outcome.died_at >= 0 else 0
        extra = {**self._extra, "run": chunk.run.id}
        log.error("an item raised %s (not an Exception): that attempt fails", error_text(exc), extra=extra)
        items = chunk.items
        rest = items[index + 1 :]
        if rest:  # not called: they are taken (and counted) again
            if chunk.attempts:
                cell.items_retried -= len(rest)
            else:
                cell.items_in -= len(rest)
            with contextlib.suppress(QueueAbandoned):  # the drain deadline took the chunk over
                self.queue.put(chunk.part(index + 1, None), force=True)
        chunk.items = items[: index + 1]
        if chunk.ids is not None:
            chunk.ids = chunk.ids[: index + 1]
        outcome.failures.append(Failure(items[index], exc, error_text(exc), index=index))
        self.complete(chunk, outcome, cell)

