"""A processor or consumer run by N long-lived threads calling a sync callable.

Each thread owns its Invoker (a class is instantiated per worker) and its counter cell, takes
whatever its queue holds in one step (about CALL_BUDGET_S of work) and runs the chunk
(chunkcalls.py: a plain function without ctx is mapped in C). A thread that dies unexpectedly
(a BaseException escaping user code) is replaced; the item it was calling counts as a failed
attempt and the rest of its chunk goes back to the queue. A one-thread stage whose calls are
fast may run in its sender's thread (`try_inline`), possibly as a fused chain (fusion.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pipelined.calls.invoke import Invoker
from pipelined.config.spec import StageSpec
from pipelined.engine import fusion
from pipelined.engine.chunkcalls import ChunkCalls, WorkerDied
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.gate import StageGate
from pipelined.engine.hooks import error_text
from pipelined.engine.lateoutputs import WATCHER, InProgress
from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import Chunk, QueueAbandoned, StageQueue
from pipelined.engine.router import Ids, Target
from pipelined.engine.runs import Run
from pipelined.engine.stage import StageServices, wait_for_setups

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 1024
CALL_BUDGET_S = 0.01  # a worker takes about this much work at once: outputs of slow items flow on
INLINE_MAX_S = 20e-6  # a stage this fast per item may run in its sender's thread


class ThreadStage(ChunkCalls):
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
        self.fused_plan: Any = None  # the chain it heads (fusion.py), kept while its worker lives
        self.per_item_s: float | None = None  # moving average of time per item in the callable
        self._threads: list[threading.Thread] = []
        self._slots: list[InProgress] = []  # chunks in progress (ChunkCalls.abandon reads them)
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
                    self.fused_plan = None  # it holds the counter cells of the chain's workers
                    self.counters.retire(inline[2])
                    self._drop_slot(inline_slot)
        finally:
            self._drop_slot(slot)

    def _new_slot(self) -> InProgress:
        slot = InProgress(self._flush_early)
        WATCHER.register(slot)
        with self._threads_lock:
            self._slots.append(slot)
        return slot

    def _drop_slot(self, slot: InProgress) -> None:
        WATCHER.unregister(slot)
        with self._threads_lock:
            if slot in self._slots:
                self._slots.remove(slot)

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
            # queued chunks first (`depth` read unlocked: a chunk another thread puts meanwhile
            # is not ordered against this one; it waits for the worker or the next inline call)
            while queue.depth and (queued := queue.take_nowait(MAX_TAKE)) is not None:
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
