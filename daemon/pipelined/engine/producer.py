"""A producer stage: runs (triggers) wait FIFO; up to `threads` of them produce at once.

Waiting runs start in priority order (FIFO within a priority; one that waited
`priority_max_wait` starts next), like the chunks of every stage queue.

Each producer thread owns an Invoker and iterates the user's iterable / generator / async
generator in slices that grow while items come fast and the downstream is busy (slices.py)
and shrink otherwise — so low rates see no batching delay and high rates move
lists. Items given to `ctx.emit` go downstream at once. On drain the generator is closed at its next yield
(and `ctx.stopping` turns true); queued runs that never started end `cancelled`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pipelined import tracing
from pipelined.calls.invoke import Invoker
from pipelined.config.spec import StageSpec
from pipelined.engine.buffer_writer import BufferFailed, Commit
from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.entry import Deliveries
from pipelined.engine.hooks import HookSet, error_text
from pipelined.engine.lineage import Lineage
from pipelined.engine.links import deliver_rest
from pipelined.engine.queues import QueueAbandoned, QueueRejected
from pipelined.engine.retry import backoff_delay
from pipelined.engine.router import Ids, PartlySent, Target
from pipelined.engine.runs import Run
from pipelined.engine.slices import pull
from pipelined.engine.stage import StageServices, refusal_text, wait_for_setups
from pipelined.logcontext import enter_log_context, exit_log_context

log = logging.getLogger("pipelined.engine")

COMMIT_POLL_S = 0.2  # a producer waiting for its slice's commit looks at the drain this often

Job = tuple[Run, Mapping[str, Any]]


class ProducerStage:
    def __init__(
        self,
        services: StageServices,
        spec: StageSpec,
        target: Target,
        counters: StageCounters,
        workers: int,
        make_invoker: Callable[[], Invoker],
        hooks: HookSet,
        make_pool: Callable[[], Any] | None = None,
    ) -> None:
        self.services = services
        self.make_pool = make_pool  # `processes = N`: runs go to pipelined.workers' produce()
        self.pool: Any = None
        self.spec = spec
        self.name = spec.name
        self.target = target
        self.counters = counters
        self.workers = workers
        self.make_invoker = make_invoker
        self.hooks = hooks
        self.binder = make_invoker()  # for binding trigger args; never set up
        self.stopping = False
        self.abandoned = False
        self._jobs: deque[Job] = deque()
        self._submitted: dict[Run, float] = {}  # when each waiting run was triggered
        self._prioritized = False  # a run with a priority is waiting
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._producing: set[Run] = set()
        self._extra = {"pipeline": services.spec.name, "stage": spec.name}

    @property
    def uses_processes(self) -> bool:
        return self.make_pool is not None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self.make_pool is not None:
            self.pool = self.make_pool()
            self.pool.start(run_before_fork_hooks=False)  # the runtime ran before_fork once
        results: list[BaseException | None] = []
        ready = threading.Condition()
        for i in range(self.workers):
            name = f"{self.services.spec.name}:{self.name}:{i + 1}"
            t = threading.Thread(target=self._run, args=(results, ready), name=name, daemon=True)
            self._threads.append(t)
            t.start()
        wait_for_setups(results, ready, self.workers, self.services.spec.name, self.name)

    def submit(self, run: Run, call_args: Mapping[str, Any]) -> bool:
        """Queue a run (by priority, FIFO within one); False when the producer was stopped (drain)."""
        with self._cond:
            if self._closed:
                return False
            self._jobs.append((run, call_args))
            self._submitted[run] = time.monotonic()
            self._prioritized = self._prioritized or run.priority != 0
            self._cond.notify()
            return True

    def stop(self) -> list[Run]:
        """Drain: stop producing; returns the queued runs that never started (to cancel)."""
        self.stopping = True
        with self._cond:
            self._closed = True
            pending = [run for run, _ in self._jobs]
            self._jobs.clear()
            self._submitted.clear()
            self._cond.notify_all()
        return pending

    def abandon(self) -> list[Run]:
        """Drain deadline: discard whatever the producers still yield; their runs end now."""
        with self._cond:
            self.abandoned = True
            return list(self._producing)

    def live_workers(self) -> int:
        if self.pool is not None:
            return int(self.pool.live_processes())
        return sum(1 for t in self._threads if t.is_alive())

    def join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.pool is not None:
            self.pool.stop(max(0.1, deadline - time.monotonic()) if deadline is not None else 30.0)
        return not any(t.is_alive() for t in self._threads)

    # -- one producer thread ----------------------------------------------------------------
    def _run(self, results: list[BaseException | None], ready: threading.Condition) -> None:
        invoker = self.make_invoker()
        error: BaseException | None = None
        try:
            if self.pool is None:
                invoker.setup()
        except BaseException as exc:
            error = exc
            log.exception("setup() failed", extra=self._extra)
        with ready:
            results.append(error)
            ready.notify_all()
        if error is not None:
            return
        cell = self.counters.cell()
        try:
            while (job := self._next_job()) is not None:
                try:
                    self._produce(invoker, cell, *job)
                except BaseException:  # outside the per-run guard (an engine fault): log, go on
                    log.exception("producer thread failed on run %s; it takes the next run", job[0].id,
                                  extra=self._extra)
                    self._finish(job[0], "producer thread failed (see the log)", False)
        finally:
            self.counters.retire(cell)
            try:
                invoker.close()
            except BaseException:
                log.exception("close() failed", extra=self._extra)

    def _next_job(self) -> Job | None:
        with self._cond:
            while not self._jobs:
                if self._closed:
                    return None
                self._cond.wait()
            job = self._pick_job() if self._prioritized else self._jobs.popleft()
            self._submitted.pop(job[0], None)
            self._producing.add(job[0])
            return job

    def _pick_job(self) -> Job:
        """The waiting run that starts next: the oldest that waited priority_max_wait, else the
        first of the highest priority."""
        jobs = self._jobs
        overdue = time.monotonic() - self.services.spec.priority_max_wait
        index = max(range(len(jobs)), key=lambda i: jobs[i][0].priority)
        for i, (run, _) in enumerate(jobs):  # oldest first
            if self._submitted.get(run, overdue) <= overdue:
                index = i
                break
        chosen = jobs[index]
        del jobs[index]  # by position: never compares the trigger's args
        self._prioritized = any(run.priority for run, _ in jobs)
        return chosen

    def _produce(self, invoker: Invoker, cell: CounterCell, run: Run, call_args: Mapping[str, Any]) -> None:
        extra = {**self._extra, "run": run.id}
        run.begin()  # a run that waited for a free producer thread (FIFO) starts now
        error = self.hooks.before_run(run.to_dict()) if self.hooks.has_run_hooks else None
        cancelled = False
        if error is None:
            logged = enter_log_context(self.services.spec.name, self.name, run.id)  # user code's log lines
            traced = None if run.trace is None else tracing.start_batch(
                run.trace, self.services.spec.name, self.name, run.id, 0)  # fmt: skip
            try:
                cancelled = self._iterate(invoker, cell, run, call_args)
            except BaseException as exc:  # SystemExit / KeyboardInterrupt too: the run fails, the thread goes on
                text = getattr(exc, "error", None) or error_text(exc)  # ProducerFailed: the worker's
                error = f"producer raised {text}"
                trace = getattr(exc, "traceback", None)
                log.error("producer raised %s; run %s fails%s", text, run.id, "\n" + trace if trace else "",
                          exc_info=trace is None, extra=extra)
            finally:
                exit_log_context(logged)
                if traced is not None:
                    traced.end(1 if error else 0, items=run.produced)
        self._finish(run, error, cancelled)

    def _finish(self, run: Run, error: str | None, cancelled: bool) -> None:
        """The run's source is done — unless the drain deadline already ended it (abandon()):
        the check and the discard are one step under the lock abandon() takes, so exactly one
        of them finishes the run. With a disk buffer the run learns it only once its
        end-of-input mark is committed: a kill after the run showed its producer done (or
        ended) must not bring it back "interrupted by a restart"."""
        if not self.abandoned:
            self._wait_commit(self.services.gate.source_done(run, error, cancelled))
        with self._cond:
            self._producing.discard(run)
            mine = not self.abandoned
        if mine:
            run.source_finished(error, cancelled=cancelled)

    def _wait_commit(self, commit: Commit | None) -> None:
        """Until `commit` is on disk, the drain deadline passed or the buffer died."""
        if commit is None:
            return
        with contextlib.suppress(BufferFailed):  # dead: the next start reads what it had committed
            while not commit.wait(COMMIT_POLL_S):
                if self.abandoned:
                    return

    def _iterate(self, invoker: Invoker, cell: CounterCell, run: Run, call_args: Mapping[str, Any]) -> bool:
        """Produce one run; True when a drain stopped it early."""

        deliveries = Deliveries()

        def emit_to(stage: str, value: Any) -> None:
            target = self.services.target_for(stage)
            self._flush(cell, run, [value], target, deliveries)

        target = self.target
        buf: list[Any] = []
        sent_early = [0]  # items of the slice being pulled that ctx.emit flushed ahead of its own

        def flush() -> None:
            items = buf[:]
            buf.clear()
            self._flush(cell, run, items, target, deliveries)

        def emit(item: Any) -> None:
            # ctx.emit goes downstream at once: nothing tells when the producer pauses next, so
            # a buffered item could wait for the end of the run (a function that emits, then sleeps).
            # Items already pulled into the slice go first (order kept) and still count as pulled.
            sent_early[0] += len(buf)
            buf.append(item)
            flush()

        if self.pool is not None:
            items: Iterator[Any] = self.pool.produce(run.id, call_args, emit_to)
        else:
            items = invoker.iterate_producer(call_args, run.id, emit_to, emit, deliveries.add)
        try:
            pull(items, buf, flush, sent_early, self)
            if self.stopping:
                return True
            # a plain function that emits through ctx returns when it sees ctx.stopping
            return invoker.kind in ("function", "async") and invoker.wants_ctx and self.services.stopping()
        finally:
            if buf:
                flush()
            close = getattr(items, "close", None)
            if close is not None:
                close()
            if not self.abandoned:
                deliveries.finish()

    def _flush(self, cell: CounterCell, run: Run, buf: list[Any], target: Target, deliveries: Deliveries) -> None:
        if self.abandoned:
            return
        n = len(buf)
        cell.items_out += n
        gate = self.services.gate
        if gate.buffer is None and not gate.track_ids and not deliveries.wanted:  # a plain memory pipeline
            run.settle(produced=n)
            self._send_all(run, buf, target, None, None)
            return
        slice_entry = deliveries.slice_sent() if deliveries.wanted and gate.buffer is None else None
        on_done = None if slice_entry is None else (lambda _lineage: deliveries.mark_done(slice_entry))
        admission = gate.admit(run, self.name, "out", buf, run.produced + 1, refuse=False, on_done=on_done)
        run.settle(produced=n)
        for _, item, text in admission.refused:  # cannot be stored: never entered
            self.services.dead_letter(self.name, run, [item], 1, ValueError(text), text=text, entered=False)
        lineage = admission.lineage
        self._send_all(run, admission.items, target, lineage, admission.ids)
        if lineage is not None:
            lineage.seal()
        commit = admission.commit
        if commit is None:
            return
        if deliveries.wanted or not (lineage is None or lineage.done):
            # before the generator goes on, what it yielded is on disk (unless it finished already)
            while not commit.wait(COMMIT_POLL_S):
                if self.abandoned:
                    return
            if deliveries.wanted:
                deliveries.mark_done(deliveries.slice_sent())

    def _send_all(self, run: Run, buf: list[Any], target: Target, lineage: Lineage | None, ids: Ids) -> None:
        if not buf:
            return
        if len(buf) > 1 and target.may_reject():
            # a full "reject" queue refuses a whole chunk: offer the items one by one, so the
            # queue takes what it has room for and a chunk larger than the queue still goes in
            for index, item in enumerate(buf):
                self._send(run, [item], target, lineage, None if ids is None else ids[index : index + 1])
        else:
            self._send(run, buf, target, lineage, ids)

    def _send(self, run: Run, items: list[Any], target: Target, lineage: Lineage | None, ids: Ids) -> None:
        """Send, retrying a refusal with backoff up to max_retries (then dead-lettered)."""
        attempt = 0
        while True:
            try:
                finished = target.send(run, items, lineage, ids)
                break
            except QueueAbandoned:
                return
            except PartlySent as partly:  # a link took its part: only the refused parts again

                def give_up(rest: list[Any], attempts: int, exc: QueueRejected) -> None:
                    self.services.dead_letter(
                        self.name, run, rest, attempts, exc, text=refusal_text(exc), entered=False, lineage=lineage
                    )

                spec = self.spec
                finished = deliver_rest(
                    partly, run, lineage, spec.max_retries, spec.retry_backoff, self.services.stopping, give_up
                )
                break
            except QueueRejected as exc:
                attempt += 1
                if attempt > self.spec.max_retries:
                    text = refusal_text(exc)
                    self.services.dead_letter(
                        self.name, run, items, attempt, exc, text=text, entered=False, lineage=lineage
                    )
                    return
                time.sleep(backoff_delay(self.spec.retry_backoff, attempt))
        if finished:
            run.settle(finished=finished, lineage=lineage)
