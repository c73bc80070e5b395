"""The built-in accumulator: batches items per run into lists.

A batch is emitted when it holds `max_size` items, when its oldest item has waited `max_wait`,
when the runtime asks (the run is quiescent: its source is done and everything of it still in
flight sits in accumulator buffers, so nothing more can arrive), and on drain. Batches never
mix runs. Buffered items stay counted in flight (as `held`) until their batch leaves. The
max_wait deadline is checked after every chunk too, so a busy run that keeps the queue full
never holds back another run's partial batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from pipelined import tracing
from pipelined.config.spec import StageSpec
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.lineage import Lineage, Segments, batch_lineage
from pipelined.engine.links import LinkRefused, deliver_rest
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.retry import backoff_delay
from pipelined.engine.router import PartlySent, Target
from pipelined.engine.runs import Run
from pipelined.engine.stage import StageServices

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 4096
Batch = tuple[Run, list[Any], "Lineage | None", "list[int] | None"]  # a batch on its way out


class AccumulatorStage:
    def __init__(
        self,
        services: StageServices,
        spec: StageSpec,
        queue: StageQueue,
        target: Target,
        counters: StageCounters,
    ) -> None:
        self.services = services
        self.spec = spec
        self.name = spec.name
        self.queue = queue
        self.target = target
        self.counters = counters
        self.workers = 0
        self.max_size = max(1, spec.max_size)
        self.max_wait = spec.max_wait
        self._buffers: dict[Run, list[Any]] = {}
        self._segments: dict[Run, Segments] = {}  # the lineages of the buffered items, in order
        self._ids: dict[Run, list[int]] = {}  # their ctx.item_id numbers, when tracked
        self._first_at: dict[Run, float] = {}
        self._lock = threading.Lock()  # held while a chunk is handled; abandon() takes it
        self._abandoned = False
        self._extra = {"pipeline": services.spec.name, "stage": spec.name}
        self._thread = threading.Thread(
            target=self._run, name=f"{services.spec.name}:{spec.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def holds(self, run: Run) -> bool:
        return run in self._buffers

    def request_flush(self, run: Run) -> None:
        with contextlib.suppress(QueueAbandoned):
            self.queue.put(Chunk(run, [], flush=True), force=True)

    def live_workers(self) -> int:
        return 0

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abandon(self) -> list[tuple[Run, list[Any], list[tuple[Lineage | None, int]]]]:
        """Drain deadline: hand over every buffered item with the lineages of its parts
        (dead-lettered by the caller)."""
        with self._lock:
            self._abandoned = True
            held = [(run, items, self._segments[run].take(len(items))) for run, items in self._buffers.items()]
            self._buffers.clear()
            self._segments.clear()
            self._ids.clear()
            self._first_at.clear()
            return held

    # -- the accumulator thread -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except BaseException:  # outside any user code (an engine fault): never die silently
                log.exception("the accumulator thread failed; it goes on", extra=self._extra)
                time.sleep(0.01)

    def _loop(self) -> None:
        """Take chunks, buffer them, send full / expired / requested batches.

        Buffers change under `_lock` (abandon() takes it); batches are sent after it is
        released: sending may block on a full queue or run the downstream stage inline (user
        code), and the drain deadline must never wait for either."""
        cell = self.counters.cell()
        try:
            while True:
                chunk = self.queue.take(MAX_TAKE, timeout=self._next_timeout())
                outgoing: list[Batch] = []
                with self._lock:
                    if self._abandoned:
                        return
                    if chunk is None:
                        if self.queue.abandoned:
                            return
                        closed = self.queue.closed
                        for run in list(self._buffers) if closed else self._expired_runs():
                            self._pop(run, outgoing)
                    else:
                        closed = False
                        if chunk.flush:
                            self._pop(chunk.run, outgoing)
                        else:
                            self._add(chunk, cell, outgoing)
                        for run in self._expired_runs():  # max_wait holds while items keep coming
                            self._pop(run, outgoing)
                self._send_all(outgoing, cell)
                del chunk, outgoing  # nothing of a run is kept while waiting for the next chunk
                if closed:
                    return
        finally:
            self.counters.retire(cell)

    def _send_all(self, outgoing: list[Batch], cell: CounterCell) -> None:
        for run, batch, lineage, ids in outgoing:
            finished = self._send(run, batch, cell, lineage, ids)
            run.settle(leave=len(batch), finished=finished)
            if lineage is not None:  # its items stay in their entries until the batch is done
                if finished:
                    lineage.apply(0, finished=finished)
                lineage.seal()

    def _next_timeout(self) -> float | None:
        if self.max_wait is None or not self._first_at:
            return None
        oldest = min(self._first_at.values())
        return max(0.0, oldest + self.max_wait - time.monotonic())

    def _expired_runs(self) -> list[Run]:
        if self.max_wait is None or not self._first_at:
            return []
        now = time.monotonic()
        return [run for run, at in self._first_at.items() if now - at >= self.max_wait]

    def _add(self, chunk: Chunk, cell: CounterCell, outgoing: list[Batch]) -> None:
        """Buffer a chunk; full batches go to `outgoing` (their items stop counting as held)."""
        run = chunk.run
        cell.items_in += len(chunk.items)
        buffer = self._buffers.get(run)
        before = 0 if buffer is None else len(buffer)
        if buffer is None:
            buffer = self._buffers[run] = []
            self._segments[run] = Segments()
            self._first_at[run] = time.monotonic()
        buffer.extend(chunk.items)
        self._segments[run].add(chunk.lineage, len(chunk.items))
        if chunk.ids is not None:
            self._ids.setdefault(run, []).extend(chunk.ids)
        emitted = 0
        while len(buffer) >= self.max_size:
            batch = buffer[: self.max_size]
            del buffer[: self.max_size]
            outgoing.append(self._batch(run, batch))
            emitted += len(batch)
        if not buffer:
            del self._buffers[run]
            del self._segments[run]
            self._ids.pop(run, None)
            del self._first_at[run]
        elif emitted:
            self._first_at[run] = time.monotonic()
        if len(buffer) != before:
            run.settle(hold=len(buffer) - before)

    def _pop(self, run: Run, outgoing: list[Batch]) -> None:
        """A run's partial batch leaves the buffer (max_wait, quiescent run, drain)."""
        buffer = self._buffers.get(run)
        self._first_at.pop(run, None)
        if buffer:
            run.settle(hold=-len(buffer))
            outgoing.append(self._batch(run, buffer))
        self._buffers.pop(run, None)
        self._segments.pop(run, None)
        self._ids.pop(run, None)

    def _batch(self, run: Run, batch: list[Any]) -> Batch:
        """A batch of the run's first buffered items: its lineage (whose parents are the
        lineages of those items) and its ctx.item_id number (its first item's)."""
        lineage = batch_lineage(self._segments[run].take(len(batch)))
        numbers = self._ids.get(run)
        ids = None
        if numbers is not None:
            ids = numbers[:1]
            del numbers[: len(batch)]
        return run, batch, lineage, ids

    def _send(self, run: Run, batch: list[Any], cell: CounterCell, lineage: Lineage | None, ids: Any) -> int:
        cell.items_out += 1
        if run.trace is not None:  # one span per batch it emits (it calls no user code)
            tracing.start_batch(run.trace, self.services.spec.name, self.name, run.id, len(batch),
                                current=False).end(0)  # fmt: skip
        attempts = 1
        while True:
            try:
                return self.target.send(run, [batch], lineage, ids)
            except QueueAbandoned:
                return 0
            except PartlySent as partly:  # a link took the batch: only the refusing links again

                def give_up(rest: list[Any], attempts: int, exc: QueueRejected) -> None:
                    text = getattr(exc, "text", str(exc))
                    self.services.dead_letter(
                        self.name, run, rest, attempts, exc, text=text, entered=False, lineage=lineage
                    )

                spec = self.spec
                return deliver_rest(
                    partly, run, lineage, spec.max_retries, spec.retry_backoff, self.services.stopping, give_up
                )
            except LinkRefused as exc:  # another pipeline: retried with backoff, then dead-lettered
                if attempts > self.spec.max_retries:
                    self.services.dead_letter(
                        self.name, run, [batch], attempts, exc, text=exc.text, entered=False, lineage=lineage
                    )
                    return 0
                time.sleep(backoff_delay(self.spec.retry_backoff, attempts))
                attempts += 1
            except QueueRejected:
                time.sleep(0.01)  # a batch cannot be retried upstream: wait for room
