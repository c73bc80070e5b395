"""`PoolStage`: N long-lived worker processes for one `processes = N`, `process_mode = "pool"` stage.

Each `process(run_id, items)` call takes an idle worker slot, sends the batch as one pickle and
waits for its rows. When a worker dies, only the item it was calling (the index it wrote to
shared memory) fails with `WorkerDied`; the rest of the batch goes to a replacement. Items that do
not pickle fail alone; so do results (in the worker). With `max_items_per_worker`, a batch is cut
so no worker calls more than that, and a worker that reached it is replaced (close() called).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.errors import StartError
from pipelined.workers import protocol
from pipelined.workers.handle import (
    WorkerDied,
    WorkerHandle,
    WorkerStartFailed,
    acquire_context,
    release_context,
)
from pipelined.workers.outcome import ItemOutcome, ProducerFailed, failed
from pipelined.workers.pool_producer import ProducerRun, WorkerSlot
from pipelined.workers.setup import run_before_fork, worker_setup

log = logging.getLogger("pipelined.workers")

START_TIMEOUT = 60.0
MAX_DEATHS_OUTSIDE_ITEMS = 3
KILLED_CALLER_GRACE = 5.0


class PoolStage:
    def __init__(self, pipeline_spec: PipelineSpec, stage_spec: StageSpec, processes: int) -> None:
        self.pipeline_spec = pipeline_spec
        self.stage_spec = stage_spec
        self.processes = max(1, processes)
        self.setup = worker_setup(pipeline_spec, stage_spec)
        self.max_items = stage_spec.max_items_per_worker
        self.method = stage_spec.start_method
        self._slots = [WorkerSlot(i) for i in range(self.processes)]
        self._idle: list[WorkerSlot] = []
        self._cond = threading.Condition()
        self._started = False
        self._stopping = False
        self._context: Any = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, run_before_fork_hooks: bool = True) -> None:
        """Run before_fork (unless told not to), start every worker and wait until all are READY."""
        if run_before_fork_hooks:
            run_before_fork(self.pipeline_spec, [self.stage_spec])
        self._context = acquire_context(self.method)
        self._started = True
        deadline = time.monotonic() + START_TIMEOUT
        try:
            for slot in self._slots:
                slot.worker = WorkerHandle(self._context, self.setup, slot.index)
            for slot in self._slots:
                assert slot.worker is not None
                slot.worker.wait_ready(deadline)
        except (WorkerStartFailed, WorkerDied) as failure:
            self._abort_start()
            raise StartError(self._start_error(failure)) from None
        with self._cond:
            self._idle = list(self._slots)

    def _abort_start(self) -> None:
        deadline = time.monotonic() + 5.0
        for slot in self._slots:
            if slot.worker is not None:
                slot.worker.stop(deadline)
                slot.worker = None
        self._started = False
        release_context(self.method)

    def _start_error(self, failure: Exception) -> str:
        where = f"{self.pipeline_spec.file}: {self.pipeline_spec.name}/{self.stage_spec.name}"
        if isinstance(failure, WorkerStartFailed):
            return f"{where}: {failure.where} failed in a worker process: {failure.error}"
        return f"{where}: a worker process did not start: {failure}"

    def stop(self, timeout: float = 30.0) -> None:
        """Let busy slots finish until the deadline, then close() every worker; kill what is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if not self._started:
                return
            self._stopping = True
            for slot in self._slots:
                if slot.worker is not None:
                    slot.worker.set_stopping()
            self._wait_idle(deadline)
            busy = [slot for slot in self._slots if slot not in self._idle]
        for slot in busy:  # still calling user code at the deadline: kill; its caller fails the rest
            if slot.worker is not None:
                slot.worker.kill()
        with self._cond:
            grace = min(KILLED_CALLER_GRACE, max(1.0, timeout))
            self._wait_idle(time.monotonic() + grace)  # a caller that never returns is not waited for
            workers = [slot.worker for slot in self._slots if slot.worker is not None]
            for slot in self._slots:
                slot.worker = None
            self._started = False
        for worker in workers:  # all at once, so N slow close() calls share one deadline
            worker.request_stop()
        for worker in workers:
            worker.finish_stop(max(deadline, time.monotonic() + 1.0))
        release_context(self.method)

    def _wait_idle(self, deadline: float) -> None:
        while len(self._idle) < len(self._slots) and time.monotonic() < deadline:
            self._cond.wait(max(0.0, deadline - time.monotonic()))

    @property
    def stopping(self) -> bool:
        return self._stopping

    def live_processes(self) -> int:
        return sum(1 for slot in self._slots if slot.worker is not None and slot.worker.is_alive())

    # -- work ----------------------------------------------------------------------------------
    def process(
        self,
        run_id: str | None,
        items: Sequence[Any],
        trace: str | None = None,
        item_ids: Sequence[str | None] | None = None,
        attempt: int = 1,
    ) -> Sequence[ItemOutcome]:
        """One outcome per item, in order. Thread-safe; blocks while every worker is busy.
        `trace`: a traceparent the worker makes current around its calls (pipelined.tracing).
        `item_ids` / `attempt`: ctx.item_id of each item and ctx.attempt (for a callable with ctx).

        A batch that came back whole from a plain function is a BatchOutcomes (a lazy sequence
        with `plain_outputs` / `filtered_count` for callers that want the outputs in bulk)."""
        if not items:
            return []
        slot = self._take_slot()
        if slot is None:
            return [self._stopped_outcome() for _ in items]
        try:
            return _BatchRun(self, slot, run_id, items, trace, item_ids, attempt).run()
        finally:
            with self._cond:
                self._idle.append(slot)
                self._cond.notify_all()

    def produce(
        self, run_id: str, call_args: Mapping[str, Any], emit_to: Callable[[str, Any], None] | None = None
    ) -> Iterator[Any]:
        """One producer run in a worker: its items as they arrive (`ctx.emit_to` pairs go to
        `emit_to`). Closing the iterator stops the producer at its next yield. ProducerFailed
        when it raises or its worker dies; a worker is held for the whole run."""
        slot = self._take_slot()
        if slot is None:
            raise ProducerFailed(f"WorkerStopped: stage {self.stage_spec.name!r} is stopping")
        try:
            yield from ProducerRun(self, slot, run_id, call_args, emit_to).items()
        finally:
            with self._cond:
                self._idle.append(slot)
                self._cond.notify_all()

    def _take_slot(self) -> WorkerSlot | None:
        with self._cond:
            while not self._idle and not self._stopping and self._started:
                self._cond.wait()
            if self._stopping or not self._started:
                return None
            return self._idle.pop()

    def _stopped_outcome(self) -> ItemOutcome:
        return failed(f"WorkerStopped: stage {self.stage_spec.name!r} is stopping")

    def replace_worker(self, slot: WorkerSlot) -> WorkerHandle:
        """A fresh worker in `slot` (the old one is stopped or gone). WorkerStartFailed if it fails."""
        if slot.worker is not None:
            slot.worker.stop(time.monotonic() + 10.0)
            slot.worker = None
        worker = WorkerHandle(self._context, self.setup, slot.index)
        try:
            worker.wait_ready(time.monotonic() + START_TIMEOUT)
        except (WorkerStartFailed, WorkerDied):
            worker.kill()
            raise
        slot.worker = worker
        return worker


class _BatchRun:
    """One `process()` call on one slot: send, collect rows, survive deaths, recycle."""

    def __init__(
        self,
        pool: PoolStage,
        slot: WorkerSlot,
        run_id: str | None,
        items: Sequence[Any],
        trace: str | None = None,
        item_ids: Sequence[str | None] | None = None,
        attempt: int = 1,
    ) -> None:
        self.pool = pool
        self.slot = slot
        self.run_id = run_id
        self.items = items
        self.trace = trace
        self.item_ids = item_ids
        self.attempt = attempt
        self.stage = pool.stage_spec.name
        self.outcomes: list[ItemOutcome | None] = [None] * len(items)
        self.pending = list(range(len(items)))
        self.deaths_outside_items = 0
        self.whole: Sequence[ItemOutcome] | None = None

    def run(self) -> Sequence[ItemOutcome]:
        while self.pending:
            worker = self._worker()
            if worker is None:
                break
            chunk = self.pending if not self.pool.max_items else self.pending[: self._budget(worker)]
            self.pending = self.pending[len(chunk):]
            self._run_chunk(worker, chunk)
        if self.whole is not None:
            return self.whole
        return [outcome or failed("WorkerDied: no result") for outcome in self.outcomes]

    def _budget(self, worker: WorkerHandle) -> int:
        return max(1, self.pool.max_items - worker.items_done)

    def _worker(self) -> WorkerHandle | None:
        worker = self.slot.worker
        if worker is not None and (not self.pool.max_items or worker.items_done < self.pool.max_items):
            return worker
        if self.pool._stopping:
            self._fail_pending(f"WorkerStopped: stage {self.stage!r} is stopping")
            return None
        try:
            return self.pool.replace_worker(self.slot)
        except (WorkerStartFailed, WorkerDied) as failure:
            self.slot.worker = None
            log.error("stage %s: a replacement worker did not start: %s", self.stage, failure,
                      extra={"pipeline": self.pool.pipeline_spec.name, "stage": self.stage})
            self._fail_pending(f"WorkerStartFailed: stage {self.stage!r}: a replacement worker did not start: {failure}")
            return None

    def _fail_pending(self, error: str) -> None:
        for index in self.pending:
            self.outcomes[index] = failed(error)
        self.pending = []

    def _run_chunk(self, worker: WorkerHandle, chunk: list[int]) -> None:
        sent = self._send(worker, chunk)
        if sent is None:
            return
        received = 0
        try:
            while True:
                kind, payload = worker.receive()
                if kind == protocol.LOAD_FAILED:
                    self._send_itemwise(worker, sent)
                    continue
                made = protocol.outcomes(payload)
                if kind == protocol.DONE and received == 0 and len(made) == len(self.outcomes):
                    self.whole = made  # the whole batch in one reply: nothing to merge
                    worker.items_done += len(sent)
                    return
                for outcome in made if received < len(sent) else ():
                    self.outcomes[sent[received]] = outcome
                    received += 1
                if kind == protocol.DONE:
                    worker.items_done += len(sent)
                    return
        except WorkerDied as death:
            self._after_death(worker, death, sent, received)

    def _tail(self, chunk: list[int]) -> tuple[Any, ...]:
        """The messages' optional last fields: the traceparent, then ctx.item_id of each item of
        `chunk` and ctx.attempt (only when the callable takes ctx)."""
        ids = self.item_ids
        if ids is None and self.attempt == 1:
            return (self.trace,) if self.trace else ()
        chunk_ids = None if ids is None else (ids if len(chunk) == len(ids) else [ids[i] for i in chunk])
        return self.trace, chunk_ids, self.attempt

    def _send(self, worker: WorkerHandle, chunk: list[int]) -> list[int] | None:
        items = self.items
        batch = items if len(chunk) == len(items) else [items[i] for i in chunk]
        try:
            data = protocol.dumps((protocol.BATCH, self.run_id, batch, *self._tail(chunk)))
        except Exception:
            chunk = self._drop_unpicklable(chunk)
            if not chunk:
                return None
            data = protocol.dumps((protocol.BATCH, self.run_id, [items[i] for i in chunk], *self._tail(chunk)))
        try:
            worker.send_bytes(data)
        except WorkerDied as death:
            self._after_death(worker, death, chunk, 0)
            return None
        return chunk

    def _drop_unpicklable(self, chunk: list[int]) -> list[int]:
        keep: list[int] = []
        for index in chunk:
            error = protocol.pickling_error(self.items[index])
            if error is None:
                keep.append(index)
            else:
                self.outcomes[index] = failed(protocol.pickle_error(self.stage, "item", self.items[index], error))
        return keep

    def _send_itemwise(self, worker: WorkerHandle, sent: list[int]) -> None:
        pickles = [(protocol.dumps(self.items[i]), protocol.type_name(self.items[i])) for i in sent]
        worker.send((protocol.ITEMWISE, self.run_id, pickles, *self._tail(sent)))

    def _after_death(self, worker: WorkerHandle, death: WorkerDied, sent: list[int], received: int) -> None:
        """Charge the crash to the item being called; the rest of the chunk goes back to pending."""
        calling = worker.progress[0]
        self.slot.worker = None
        worker.kill()
        worker.conn.close()
        unreported = sent[received:]
        error = f"WorkerDied: worker died: {death.description} (stage {self.stage!r})"
        log.warning("stage %s: worker process %s", self.stage, error,
                    extra={"pipeline": self.pool.pipeline_spec.name, "stage": self.stage, "run": self.run_id})
        if received <= calling < len(sent):
            self.outcomes[sent[calling]] = failed(error)
            unreported = [i for i in unreported if i != sent[calling]]
        else:
            self.deaths_outside_items += 1
            if self.deaths_outside_items >= MAX_DEATHS_OUTSIDE_ITEMS:
                for index in unreported:
                    self.outcomes[index] = failed(error)
                unreported = []
        self.pending = unreported + self.pending
