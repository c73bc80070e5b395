"""`ForkPerItemStage`: a `process_mode = "fork_per_item"` stage — a fresh fork per item.

The daemon never forks itself: it starts one single-threaded zygote per stage (through the
forkserver) and sends it whole batches; the zygote forks a child per item, at most `processes`
at once (zygote.py). A reader thread hands each reply to the `process()` call waiting for it, so
several dispatcher threads can have batches in the zygote at the same time. If the zygote dies,
the waiting items fail with the way it died and the next `process()` starts a new zygote.
"""

from __future__ import annotations

import contextlib
import itertools
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
from pipelined.workers.proctree import child_pids
from pipelined.workers.setup import run_before_fork, worker_setup
from pipelined.workers.zygote import zygote_main

log = logging.getLogger("pipelined.workers")

START_TIMEOUT = 60.0
ZYGOTE_METHOD = "forkserver"


class _Waiting:
    def __init__(
        self,
        run_id: str | None,
        items: list[Any],
        trace: str | None = None,
        item_ids: list[str | None] | None = None,
        attempt: int = 1,
    ) -> None:
        self.run_id = run_id
        self.items = items
        # the messages' optional last fields: the traceparent (pipelined.tracing), then for a
        # callable with ctx each item's ctx.item_id and ctx.attempt
        self.tail: tuple[Any, ...] = (trace,) if trace else ()
        if item_ids is not None or attempt != 1:
            self.tail = (trace, item_ids, attempt)
        self.rows: list[Any] | None = None
        self.error: str | None = None
        self.done = threading.Event()


class ForkPerItemStage:
    def __init__(self, pipeline_spec: PipelineSpec, stage_spec: StageSpec, processes: int) -> None:
        self.pipeline_spec = pipeline_spec
        self.stage_spec = stage_spec
        self.stage = stage_spec.name
        self.processes = max(1, processes)
        self.setup = worker_setup(pipeline_spec, stage_spec)
        self._lock = threading.Lock()  # zygote (re)start and sends
        self._zygote: WorkerHandle | None = None
        self._reader: threading.Thread | None = None
        self._waiting: dict[int, _Waiting] = {}
        self._ids = itertools.count(1)
        self._context: Any = None
        self._started = False
        self._stopping = False

    def start(self, run_before_fork_hooks: bool = True) -> None:
        if run_before_fork_hooks:
            run_before_fork(self.pipeline_spec, [self.stage_spec])
        self._context = acquire_context(ZYGOTE_METHOD)
        try:
            with self._lock:
                self._start_zygote()
        except (WorkerStartFailed, WorkerDied) as failure:
            release_context(ZYGOTE_METHOD)
            where = f"{self.pipeline_spec.file}: {self.pipeline_spec.name}/{self.stage}"
            if isinstance(failure, WorkerStartFailed):
                raise StartError(f"{where}: {failure.where} failed in a worker process: {failure.error}") from None
            raise StartError(f"{where}: the fork_per_item zygote did not start: {failure}") from None
        self._started = True

    def _start_zygote(self) -> None:
        zygote = WorkerHandle(self._context, self.setup, 0, target=zygote_main, extra_args=(self.processes,))
        try:
            zygote.wait_ready(time.monotonic() + START_TIMEOUT)
        except (WorkerStartFailed, WorkerDied):
            zygote.kill()
            raise
        self._zygote = zygote
        self._reader = threading.Thread(target=self._read, args=(zygote,), daemon=True,
                                        name=f"{self.pipeline_spec.name}:{self.stage}:zygote-reader")
        self._reader.start()

    def live_processes(self) -> int:
        zygote = self._zygote
        if zygote is None or not zygote.is_alive() or zygote.pid is None:
            return 0
        return 1 + len(child_pids(zygote.pid))

    # -- work ----------------------------------------------------------------------------------
    def process(
        self,
        run_id: str | None,
        items: Sequence[Any],
        trace: str | None = None,
        item_ids: Sequence[str | None] | None = None,
        attempt: int = 1,
    ) -> list[ItemOutcome]:
        if not items:
            return []
        outcomes: list[ItemOutcome | None] = [None] * len(items)
        keep = self._picklable(items, outcomes)
        ids = None if item_ids is None else [item_ids[i] for i in keep]
        waiting = _Waiting(run_id, [items[i] for i in keep], trace, ids, attempt)
        if keep:
            error = self._submit(waiting)
            if error is None:
                waiting.done.wait()
                error = waiting.error
            rows = waiting.rows or [None] * len(keep)
            for index, row in zip(keep, rows, strict=True):
                outcomes[index] = ItemOutcome(*row) if row is not None else failed(error or "WorkerDied: no result")
        return [o or failed("WorkerDied: no result") for o in outcomes]

    def _picklable(self, items: Sequence[Any], outcomes: list[ItemOutcome | None]) -> list[int]:
        try:
            protocol.dumps(list(items))
            return list(range(len(items)))
        except Exception:
            keep: list[int] = []
            for index, item in enumerate(items):
                try:
                    protocol.dumps(item)
                    keep.append(index)
                except Exception as exc:
                    outcomes[index] = failed(protocol.pickle_error(self.stage, "item", item, exc))
            return keep

    def _submit(self, waiting: _Waiting) -> str | None:
        """Send the batch; the error text when it cannot be sent (stopping, zygote won't start)."""
        with self._lock:
            if self._stopping or not self._started:
                return f"WorkerStopped: stage {self.stage!r} is stopping"
            if self._zygote is None or not self._zygote.is_alive():
                if self._zygote is not None:
                    self._zygote.kill()
                    self._zygote.conn.close()
                try:
                    self._start_zygote()
                except (WorkerStartFailed, WorkerDied) as failure:
                    return f"WorkerStartFailed: stage {self.stage!r}: the zygote did not start again: {failure}"
            assert self._zygote is not None
            request = next(self._ids)
            self._waiting[request] = waiting
            try:
                self._zygote.send_bytes(protocol.dumps(
                    (protocol.BATCH, request, waiting.run_id, protocol.dumps(waiting.items), *waiting.tail)))
            except WorkerDied as death:
                del self._waiting[request]
                return f"WorkerDied: the fork_per_item zygote died: {death.description} (stage {self.stage!r})"
        return None

    def _read(self, zygote: WorkerHandle) -> None:
        """Hand replies to their waiting callers until CLOSED or the zygote dies."""
        try:
            while True:
                kind, payload = zygote.receive()
                if kind == protocol.CLOSED:
                    if payload:
                        log.warning("stage %s: %s", self.stage, payload,
                                    extra={"pipeline": self.pipeline_spec.name, "stage": self.stage})
                    break
                if kind == protocol.LOAD_FAILED:
                    self._resend_itemwise(zygote, payload)
                    continue
                request, rows = payload
                waiting = self._waiting.pop(request, None)
                if waiting is not None:
                    waiting.rows = rows
                    waiting.done.set()
        except (OSError, ValueError):
            pass  # stop() closed the connection
        except WorkerDied as death:
            self._fail_waiting(f"WorkerDied: the fork_per_item zygote died: {death.description} (stage {self.stage!r})")
        self._fail_waiting(f"WorkerStopped: stage {self.stage!r} is stopping")

    def _resend_itemwise(self, zygote: WorkerHandle, request: int) -> None:
        waiting = self._waiting[request]
        pickles = [(protocol.dumps(item), protocol.type_name(item)) for item in waiting.items]
        with self._lock:
            zygote.send((protocol.ITEMWISE, request, waiting.run_id, pickles, *waiting.tail))

    def _fail_waiting(self, error: str) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for entry in waiting:
            entry.error = error
            entry.done.set()

    def produce(
        self, run_id: str, call_args: Mapping[str, Any], emit_to: Callable[[str, Any], None] | None = None
    ) -> Iterator[Any]:
        """Producers never run per item: make_process_stage gives them a PoolStage."""
        raise ProducerFailed(f"RuntimeError: stage {self.stage!r}: a producer cannot use fork_per_item")

    # -- stop ----------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Running items get until the deadline (then SIGKILL); close() in the zygote; all joined."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._started:
                return
            self._stopping = True
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.set_stopping()
            with contextlib.suppress(WorkerDied):
                zygote.send((protocol.STOP, max(0.0, deadline - time.monotonic())))
            if self._reader is not None:
                self._reader.join(max(1.0, deadline - time.monotonic() + 5.0))
            zygote.join(time.monotonic() + 5.0)
        self._fail_waiting(f"WorkerStopped: stage {self.stage!r} is stopping")
        self._started = False
        release_context(ZYGOTE_METHOD)
