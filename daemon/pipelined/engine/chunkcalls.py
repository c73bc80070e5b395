"""How a worker thread calls one chunk of a thread stage, and completes it.

The fast path (a plain function without ctx) maps the function over the chunk in C; otherwise
each item is called through its Invoker (ctx, generators streaming their outputs, ctx.emit_to).
While a chunk is in progress its results are shown in an `InProgress` slot, so the watcher of
lateoutputs.py routes the outputs of finished items while a slow one is still being called —
with their item numbers when those are tracked. A BaseException escaping user code kills the
worker (`WorkerDied`: threads.py replaces it): the item being called counts as a failed
attempt, the items before it complete, the rest go back to the queue.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import time
from collections.abc import Callable
from typing import Any

from pipelined.calls.invoke import Invoker
from pipelined.engine.counters import CounterCell
from pipelined.engine.hooks import error_text
from pipelined.engine.lateoutputs import InProgress
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected
from pipelined.engine.router import Ids, offer
from pipelined.engine.stage import (
    Failure,
    Outcome,
    StageBase,
    failure_of,
    item_id_text,
    rejected_failure,
)
from pipelined.logcontext import enter_log_context, exit_log_context

log = logging.getLogger("pipelined.engine")

_FAILED = object()  # marks a failed item's place among map() results
_NOT_NONE = functools.partial(operator.is_not, None)  # identity only: never calls a value's __eq__
ABANDON_WAIT_S = 0.05  # the drain deadline waits this long at most for a chunk's slot
STOP_ITERATION_TEXT = "StopIteration: raised by the stage's function (it fails the item like any exception)"


class WorkerDied(Exception):
    """A BaseException escaped the user callable; the thread is replaced."""


class ChunkCalls(StageBase):
    """The per-chunk half of ThreadStage (threads.py has its threads, loops and inline calls)."""

    _per_item: bool  # each item's outputs routed on their own (StageBase.routes_per_item)
    _early: bool  # outputs may be routed mid-chunk (lateoutputs.py)
    per_item_s: float | None  # moving average of time per item in the callable
    _slots: list[InProgress]  # its workers' (and its inline caller's) chunks in progress

    def abandon(self) -> list[Chunk]:
        """Drain deadline: the chunks workers still hold, less the items of each that are done
        and whose outputs all went on early (lateoutputs.py) — those are settled here, as the
        chunk's completion would have: never dead-lettered as well as delivered."""
        held = super().abandon()
        if not held or not self._early:
            return held
        slots = {id(slot.chunk): slot for slot in list(self._slots) if slot.chunk is not None}
        return [self._left_of(chunk, slots.get(id(chunk))) for chunk in held]

    def _left_of(self, chunk: Chunk, slot: InProgress | None) -> Chunk:
        """What is left of `chunk` for the drain to give up (its done items settled here).
        A generator's spill holds the slot's lock while it sends (maybe running a stage inline): the
        deadline does not wait for it, the whole chunk is left then."""
        if slot is None or not slot.lock.acquire(timeout=ABANDON_WAIT_S):
            return chunk
        try:
            if slot.chunk is not chunk:
                return chunk
            slot.active = False  # the watcher routes nothing more of it
            slot.chunk = None
            done, early, results, outcome = slot.done, slot.early, slot.results, slot.outcome
            finished = 0
            if slot.raw:
                failed = [i for i in range(done) if results[i] is _FAILED]
                filtered = sum(1 for r in results[:done] if r is None)
            else:
                _, filtered, failures = slot.ends[done - 1] if done else (0, 0, 0)
                failed = [f.index for f in outcome.failures[:failures]]
                finished, outcome.finished = outcome.finished, 0  # a generator's outputs streamed
        finally:
            slot.lock.release()
        if early:
            self.counters.add("items_out", early)
        if not done:
            if finished:
                chunk.run.settle(finished=finished, lineage=chunk.lineage)
            return chunk
        chunk.run.settle(leave=done - len(failed), finished=finished, filtered=filtered, lineage=chunk.lineage)
        left = [*failed, *range(done, len(chunk.items))]
        ids = chunk.ids
        rest = Chunk(chunk.run, [chunk.items[i] for i in left], chunk.attempts, lineage=chunk.lineage,
                     ids=None if ids is None else [ids[i] for i in left])  # fmt: skip
        rest.enqueued_at = chunk.enqueued_at
        return rest

    def _flush_early(self, slot: InProgress) -> None:
        """The watcher's: route the outputs of the chunk's finished items, if there is room."""
        if not slot.lock.acquire(blocking=False):
            return  # the worker routes them itself right now (a streaming generator)
        try:
            if not slot.active:
                return
            results = slot.results
            sent = slot.sent
            if slot.raw:  # one result per item
                n = done = len(results)
            else:  # up to the last item whose outputs are all there (and that emitted none elsewhere)
                ends = slot.ends
                done = len(ends)
                n = ends[done - 1][0] if done else 0
            if n <= sent:
                slot.done = done
                return
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
            slot.done = done
        finally:
            slot.lock.release()


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
            if early is not None:
                early.clear()
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
        if early is not None:  # kept until now: the drain deadline may take the chunk over meanwhile
            early.clear()
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
            slot.start(chunk, results, raw=True, ids=chunk.ids)
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
        slot.start(chunk, outcome.outputs, raw=False, ids=outcome.output_ids, outcome=outcome)
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
        # the items called so far, for the watcher (lateoutputs.py) and the drain deadline: an item
        # that used ctx.emit_to ends them (what it emitted elsewhere goes when the chunk is done)
        ends = slot.ends if slot is not None else None

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
                    slot.done = len(slot.ends)  # every item before this one is routed whole

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
                if ends is not None:
                    ends.append((len(outcome.outputs), outcome.filtered, len(outcome.failures)))
                continue
            except Exception as exc:
                outcome.failures.append(failure_of(item, exc, index))
                if ends is not None:
                    ends.append((len(outcome.outputs), outcome.filtered, len(outcome.failures)))
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
            if routed:
                outcome.routed.extend(routed)
                ends = None
            if ends is not None:  # after the outputs: the watcher routes up to here
                ends.append((len(outcome.outputs), outcome.filtered, len(outcome.failures)))

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
