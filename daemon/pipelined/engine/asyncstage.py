"""A processor or consumer whose callable is `async def` / an async generator.

The stage owns one event loop in one thread; `threads` is its concurrency (items awaited at
once). A feeder thread takes chunks from the queue — only as many items as there are free
slots, so a busy stage leaves its queue to fill and back-pressure upstream — and hands each
chunk to the loop, where its items are awaited together.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pipelined.calls.invoke import Invoker
from pipelined.config.spec import StageSpec
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.hooks import error_text
from pipelined.engine.lateoutputs import POLL_S
from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.router import Target, offer
from pipelined.engine.runs import Run
from pipelined.engine.stage import (
    Failure,
    Outcome,
    StageBase,
    StageServices,
    failure_of,
    item_id_text,
    rejected_failure,
)
from pipelined.errors import StartError
from pipelined.logcontext import enter_log_context

log = logging.getLogger("pipelined.engine")

EARLY_AFTER_S = 2 * POLL_S  # finished items' outputs wait at most about this for their chunk


class AsyncStage(StageBase):
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
        # items awaited at once: `threads`, capped by `concurrency` (a rate_limit's tokens come
        # through the gate, like for every stage)
        self.concurrency = min(max(1, workers), spec.concurrency or workers)
        self.workers = 1  # one thread (utilization is measured against `concurrency` slots)
        self.invoker = make_invoker()
        self._per_item = self.routes_per_item(self.invoker.wants_ctx)
        self._early = not self.is_consumer and not self._per_item  # outputs may be routed mid-chunk
        self.loop = asyncio.new_event_loop()
        self._free = self.concurrency
        self._free_cond = threading.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cell: CounterCell | None = None
        name = f"{services.spec.name}:{spec.name}"
        self._loop_thread = threading.Thread(target=self._run_loop, name=f"{name}:loop", daemon=True)
        self._feeder = threading.Thread(target=self._feed, name=f"{name}:feed", daemon=True)

    def start(self) -> None:
        try:
            self.invoker.setup()
        except Exception as exc:
            raise StartError(
                f"pipeline {self.services.spec.name!r}, stage {self.name!r}: setup failed: {error_text(exc)}"
            ) from exc
        self._cell = self.counters.cell()
        self._loop_thread.start()
        self._feeder.start()

    def busy_now(self) -> int:
        """Items being awaited right now (the stats row's `busy` for an async stage)."""
        with self._free_cond:
            return self.concurrency - self._free

    def live_workers(self) -> int:
        return 1 if self._loop_thread.is_alive() else 0

    def join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._feeder.join(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._loop_thread.join(left)
        return not self._loop_thread.is_alive()

    # -- feeder thread ----------------------------------------------------------------------
    def _feed(self) -> None:
        while True:
            with self._free_cond:
                self._free_cond.wait_for(lambda: self._free > 0)
                free = self._free
            gate = self.gate
            chunk = self.queue.take(free) if gate is None else gate.take(self.queue, free)
            if chunk is None:
                break
            with self._free_cond:
                self._free -= len(chunk.items)
            self.hold(chunk)
            try:
                self.loop.call_soon_threadsafe(self._launch, chunk)
            except BaseException as exc:  # the loop is gone (an engine fault): fail the chunk, go on
                log.exception("cannot hand a chunk to the event loop", extra=self._extra)
                self._release_slots(len(chunk.items))
                self._fail_chunk(chunk, exc)
            del chunk  # not kept while waiting for the next one (its run may end meanwhile)
        self.loop.call_soon_threadsafe(self._finish)

    # -- loop thread ------------------------------------------------------------------------
    def _run_loop(self) -> None:
        """Run the loop until `_finish` stops it. Something that escapes it (a BaseException
        from a task the callable started) is logged and the loop runs on in this thread: its
        tasks are still there, and the feeder keeps handing it chunks."""
        asyncio.set_event_loop(self.loop)
        try:
            while True:
                try:
                    self.loop.run_forever()
                    break
                except BaseException as exc:
                    log.error("the event loop stopped on %s; it runs on", error_text(exc), extra=self._extra)
        finally:
            try:
                self.invoker.close()
            except BaseException:
                log.exception("close() failed", extra=self._extra)
            if self._cell is not None:
                self.counters.retire(self._cell)
            self.loop.close()

    def _launch(self, chunk: Chunk) -> None:
        task = self.loop.create_task(self._process(chunk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self) -> None:
        async def wait_all() -> None:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            self.loop.stop()

        self.loop.create_task(wait_all())

    async def _process(self, chunk: Chunk) -> None:
        try:
            await self._call_chunk(chunk)
        except BaseException as exc:  # outside the per-item guard (an engine fault): never lose the chunk
            log.exception("processing a chunk failed", extra=self._extra)
            self._fail_chunk(chunk, exc)

    def _fail_chunk(self, chunk: Chunk, exc: BaseException) -> None:
        """Every item of the chunk fails this attempt (a no-op when it was completed already)."""
        assert self._cell is not None
        outcome = Outcome(failures=[Failure(item, exc, error_text(exc), index=i) for i, item in enumerate(chunk.items)])
        self.complete(chunk, outcome, self._cell)

    async def _call_chunk(self, chunk: Chunk) -> None:
        cell = self._cell
        assert cell is not None
        items = chunk.items
        n = len(items)
        if chunk.attempts:  # a retry: counted once in items_in, when it was first taken
            cell.items_retried += n
        else:
            cell.items_in += n
        run_id = chunk.run.id
        enter_log_context(self.services.spec.name, self.name, run_id)  # this task only: user code's log lines
        outcome = Outcome()
        routed_per_item: list[list[tuple[str, Any]]] = [[] for _ in items]
        ids = chunk.ids
        lineage = chunk.lineage
        attempt = chunk.attempts + 1 + (lineage.replays if lineage is not None else 0)
        early = None
        if self._early and n > 1 and ids is None:  # (with item ids tracked, outputs go with the chunk)
            early = _EarlyOutputs(self.target, chunk.run, self.loop, lineage)

        def sink_for(index: int) -> Callable[[str, Any], None]:
            def sink(stage: str, value: Any) -> None:
                self.emit_to_checker(stage, value)
                routed_per_item[index].append((stage, value))

            return sink

        def spill_for(index: int) -> Callable[[list[Any]], None]:
            number = None if ids is None else ids[index]

            def spill(part: list[Any]) -> None:
                """An item emitting many outputs (an async generator): route them as they come."""
                if self._per_item:
                    outcome.finished += self.route_item(chunk.run, part, [], lineage, number)
                else:
                    outcome.finished += self._send(chunk.run, part, lineage, None if number is None else [number] * len(part))
                outcome.sent_early += len(part)

            return spill

        async def call(index: int, item: Any) -> tuple[list[Any], bool] | BaseException:
            began = time.perf_counter()
            item_id = item_id_text(run_id, None if ids is None else ids[index])
            try:
                result = await self.invoker.acall_item(item, run_id, sink_for(index), spill_for(index),
                                                       item_id=item_id, attempt=attempt)  # fmt: skip
                if early is not None:
                    early.add(index, result[0])
                return result
            except (KeyboardInterrupt, SystemExit) as exc:  # the task would stop the loop itself
                log.error("an item raised %s (not an Exception): that attempt fails", error_text(exc),
                          extra={**self._extra, "run": run_id})
                return exc
            finally:  # its slot is free now: a slow item never holds back its chunk's others
                cell.busy_seconds += time.perf_counter() - began
                self._release_slots(1)

        traced = None if chunk.run.trace is None else self._traced(chunk)  # current in this task
        results = await asyncio.gather(*(call(i, item) for i, item in enumerate(items)), return_exceptions=True)
        sent: set[int] = set()
        if early is not None:
            sent, sent_early = early.close()
            outcome.sent_early += sent_early
        per_item = outcome.routed_already = self._per_item
        if ids is not None:
            outcome.output_ids, outcome.routed_ids = [], []
        for index, (item, result, routed) in enumerate(zip(items, results, routed_per_item, strict=True)):
            if isinstance(result, Exception):
                outcome.failures.append(failure_of(item, result, index))
                continue
            if isinstance(result, BaseException):
                outcome.failures.append(Failure(item, result, error_text(result), index=index))
                continue
            outputs, filtered = result
            number = None if ids is None else ids[index]
            if per_item:  # a refusal fails this item's attempt only (it is retried)
                try:
                    outcome.finished += self.route_item(chunk.run, outputs, routed, lineage, number)
                except QueueRejected as exc:
                    outcome.failures.append(rejected_failure(item, exc, index))
                    continue
                except QueueAbandoned:
                    pass  # drain deadline: the receiving side dead-lettered what it held
            if filtered and not routed:
                outcome.filtered += 1
            if index not in sent:
                outcome.outputs.extend(outputs)
                if number is not None:
                    outcome.output_ids.extend([number] * len(outputs))  # type: ignore[union-attr]
            outcome.routed.extend(routed)
            if number is not None:
                outcome.routed_ids.extend([number] * len(routed))  # type: ignore[union-attr]
        if traced is not None:
            traced.end(len(outcome.failures))
        self.complete(chunk, outcome, cell)

    def _release_slots(self, n: int) -> None:
        with self._free_cond:
            self._free += n
            self._free_cond.notify()


class _EarlyOutputs:
    """Outputs of a chunk's finished items while others are still awaited: routed about
    EARLY_AFTER_S after they came (by the loop's timer), only if every downstream queue has room
    now (lateoutputs.py's rule: never wait, never run a stage inline); the rest go with the
    chunk."""

    def __init__(self, target: Target, run: Run, loop: asyncio.AbstractEventLoop, lineage: Lineage | None) -> None:
        self.target = target
        self.run = run
        self.lineage = lineage
        self.loop = loop
        self.pending: list[tuple[int, list[Any]]] = []
        self.sent: set[int] = set()
        self.early = 0
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def add(self, index: int, outputs: list[Any]) -> None:
        if self.done or not outputs:
            return
        self.pending.append((index, outputs))
        if self.timer is None:
            self.timer = self.loop.call_later(EARLY_AFTER_S, self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.done or not self.pending:
            return
        part = [value for _, outputs in self.pending for value in outputs]
        finished = offer(self.target, self.run, part, self.lineage)
        if finished is None:  # no room downstream now: try again later (or with the chunk)
            self.timer = self.loop.call_later(EARLY_AFTER_S, self.flush)
            return
        if finished:
            self.run.settle(finished=finished, lineage=self.lineage)
        self.sent.update(index for index, _ in self.pending)
        self.early += len(part)
        self.pending.clear()

    def close(self) -> tuple[set[int], int]:
        """The chunk is done: (items whose outputs went early, how many outputs that was)."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        return self.sent, self.early
