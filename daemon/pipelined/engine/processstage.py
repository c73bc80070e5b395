"""A stage with `processes = N`: N feeder threads hand chunks to `pipelined.workers`.

Each feeder takes a chunk (up to MAX_TAKE items, at most its share of the queue), calls
`stage_pool.process(run_id, items)` (blocking, one ItemOutcome per item) and completes the
chunk like any other stage: outputs routed, failed items retried on the timer or dead-lettered
here in the engine. When a whole batch succeeded, its outputs are taken in bulk
(`BatchOutcomes.plain_outputs` / `filtered_count`) without building a per-item object.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pipelined.config.spec import StageSpec
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.router import Target
from pipelined.engine.stage import Failure, Outcome, StageBase, StageServices, item_id_text, rejected_failure
from pipelined.workers import make_process_stage

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 1024
FIRST_TAKE = 1  # before the first call says how long an item takes (a slow first chunk holds its outputs)
CALL_BUDGET_S = 0.01  # a slow stage's calls are cut to about this much work


class ProcessStageRunner(StageBase):
    uses_processes = True

    def __init__(
        self,
        services: StageServices,
        spec: StageSpec,
        queue: StageQueue,
        target: Target,
        counters: StageCounters,
        processes: int,
        wants_ctx: bool = False,
    ) -> None:
        super().__init__(services, spec, queue, target, counters, processes)
        self.wants_ctx = wants_ctx  # the callable takes ctx: its workers get ctx.item_id / ctx.attempt
        self.pool: Any = None
        self._threads: list[threading.Thread] = []
        self._per_item = self.routes_per_item(True)  # ctx.emit_to may aim at any queue
        self._downstream_rejects = self.routes_per_item(False)
        self.per_item_s: float | None = None  # moving average of a call's time per item

    def start(self) -> None:
        self.pool = make_process_stage(self.services.spec, self.spec, self.workers)
        self.pool.start(run_before_fork_hooks=False)  # the runtime ran before_fork once
        for i in range(self.workers):
            name = f"{self.services.spec.name}:{self.name}:feed{i + 1}"
            t = threading.Thread(target=self._feed, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def live_workers(self) -> int:
        return int(self.pool.live_processes()) if self.pool is not None else 0

    def join(self, timeout: float | None) -> bool:
        self.stop_workers(timeout if timeout is not None else 30.0)
        return True

    def stop_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.pool is not None:
            self.pool.stop(max(0.1, deadline - time.monotonic()))

    def stop(self) -> None:
        """Teardown after a failed start."""
        self.queue.close()
        if self.pool is not None:
            try:
                self.pool.stop(5.0)
            except Exception:
                log.exception("stopping worker processes failed", extra=self._extra)

    def _feed(self) -> None:
        cell = self.counters.cell()
        queue = self.queue
        gate = self.gate
        try:
            # with rate_limit / concurrency the gate gives the tokens (and the slot) before a batch leaves
            while (chunk := queue.take(self._take_size(), sharers=1) if gate is None else gate.take(
                queue, self._take_size()
            )) is not None:
                self.hold(chunk)
                try:
                    self._process(chunk, cell)
                except BaseException as exc:  # outside the per-item guard (an engine fault): never die
                    log.exception("a feeder failed on a chunk; its items fail this attempt", extra=self._extra)
                    text = f"{type(exc).__name__}: {exc}"
                    failures = [Failure(item, exc, text, index=i) for i, item in enumerate(chunk.items)]
                    self.complete(chunk, Outcome(failures=failures), cell)
                finally:
                    if gate is not None:
                        gate.done()
                del chunk  # not kept while waiting for the next one (its run may end meanwhile)
        finally:
            self.counters.retire(cell)

    def _take_size(self) -> int:
        """How many queued items one feeder takes for one process() call.

        Every call costs a pipe round trip (tens of µs), so a feeder of fast items takes as much
        as is queued, up to MAX_TAKE. Slow items are taken in calls of about CALL_BUDGET_S of
        work, and never more than a feeder's share of the queue, so the last items of a burst
        spread over every worker instead of waiting behind one. Until the first call returns,
        a take is at most FIRST_TAKE items."""
        per_item = self.per_item_s
        if per_item is None:
            limit = FIRST_TAKE
        else:
            limit = int(CALL_BUDGET_S / per_item) if per_item > 0 else MAX_TAKE
            if limit >= MAX_TAKE:
                return MAX_TAKE
        depth = self.queue.depth  # read without the lock: a hint
        if depth == 0:  # the feeder will wait: whatever arrives first is its to take, up to limit
            return max(1, limit)
        return max(1, min(limit, -(-depth // self.workers)))

    def _process(self, chunk: Chunk, cell: CounterCell) -> None:
        items = chunk.items
        if chunk.attempts:  # a retry: counted once in items_in, when it was first taken
            cell.items_retried += len(items)
        else:
            cell.items_in += len(items)
        began = cell.begin()
        outcome = Outcome()
        traced = None if chunk.run.trace is None else self._traced(chunk, current=False)
        trace = None if traced is None else traced.traceparent()  # current around the worker's calls
        try:
            if self.wants_ctx:
                item_ids, attempt = self._ctx_of(chunk)
                outcomes = self.pool.process(chunk.run.id, items, trace, item_ids, attempt)
            elif trace is None:
                outcomes = self.pool.process(chunk.run.id, items)
            else:
                outcomes = self.pool.process(chunk.run.id, items, trace=trace)
        except Exception as exc:
            cell.end(began)
            text = f"{type(exc).__name__}: {exc}"
            outcome.failures = [Failure(item, exc, text, index=i) for i, item in enumerate(items)]
            if traced is not None:
                traced.end(len(items))
            self.complete(chunk, outcome, cell)
            return
        took = time.perf_counter() - began
        cell.end(began)
        seconds = took / max(1, len(items))
        self.per_item_s = seconds if self.per_item_s is None else 0.7 * self.per_item_s + 0.3 * seconds
        # a whole batch from a plain function (no ctx, so no emit_to): outputs in bulk, no
        # per-item objects — unless the downstream may refuse them item by item
        plain = None if self._downstream_rejects or chunk.ids is not None else getattr(outcomes, "plain_outputs", None)
        if plain is not None:
            if not self.is_consumer:
                outcome.outputs = plain if isinstance(plain, list) else list(plain)
                outcome.filtered = outcomes.filtered_count
        else:
            self._collect(chunk, outcomes, outcome, self._per_item)
        if traced is not None:
            traced.end(len(outcome.failures))
        self.complete(chunk, outcome, cell)

    @staticmethod
    def _ctx_of(chunk: Chunk) -> tuple[list[str | None] | None, int]:
        """ctx.item_id of each item of the chunk (when numbered) and ctx.attempt, as a thread
        stage computes them."""
        run_id, ids, lineage = chunk.run.id, chunk.ids, chunk.lineage
        attempt = chunk.attempts + 1 + (lineage.replays if lineage is not None else 0)
        return (None if ids is None else [item_id_text(run_id, number) for number in ids]), attempt

    def _collect(self, chunk: Chunk, outcomes: Any, outcome: Outcome, per_item: bool) -> None:
        """Read the outcomes one by one: failures, ctx.emit_to pairs, or a rejecting downstream.

        With `per_item` (the downstream, or for ctx.emit_to any queue of the pipeline, may
        refuse: on_full = "reject"), each item's results are routed on their own, and an item
        whose results are refused fails that attempt, like in a thread stage."""
        run = chunk.run
        outcome.routed_already = per_item
        failures = outcome.failures
        ids = chunk.ids
        if ids is not None:
            outcome.output_ids, outcome.routed_ids = [], []
        for index, (item, result) in enumerate(zip(chunk.items, outcomes, strict=True)):
            if result.error is not None:
                failures.append(Failure(item, None, result.error, result.traceback, index))
                continue
            number = None if ids is None else ids[index]
            if per_item:
                try:
                    outcome.finished += self.route_item(
                        run, list(result.outputs), list(result.routed), chunk.lineage, number
                    )
                except QueueRejected as exc:
                    failures.append(rejected_failure(item, exc, index=index))
                    continue
                except QueueAbandoned:
                    pass  # drain deadline: the receiving side dead-lettered what it held
            if result.filtered and not result.routed:
                outcome.filtered += 1
            outcome.outputs.extend(result.outputs)
            outcome.routed.extend(result.routed)
            if number is not None:
                outcome.output_ids.extend([number] * len(result.outputs))  # type: ignore[union-attr]
                outcome.routed_ids.extend([number] * len(result.routed))  # type: ignore[union-attr]
