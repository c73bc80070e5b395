"""A stage with `processes = N`: N feeder threads hand chunks to `pipelined.workers`.

Each feeder takes a chunk, calls `stage_pool.process(run_id, items)` (blocking, one
ItemOutcome per item) and completes the chunk like any other stage: outputs routed, failed
items retried on the timer or dead-lettered here in the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pipelined.engine.counters import CounterCell, StageCounters
from pipelined.engine.queues import Chunk, StageQueue
from pipelined.engine.router import Target
from pipelined.engine.stage import Failure, Outcome, StageBase, StageServices
from pipelined.errors import StartError
from pipelined.spec import StageSpec

log = logging.getLogger("pipelined.engine")

MAX_TAKE = 256


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
    ) -> None:
        super().__init__(services, spec, queue, target, counters, processes)
        self.pool: Any = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        try:
            from pipelined.workers import make_process_stage
        except ImportError as exc:
            raise StartError(f"stage {self.name!r}: processes not supported: {exc}") from exc
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
        try:
            while (chunk := self.queue.take(MAX_TAKE, sharers=self.workers)) is not None:
                self.hold(chunk)
                self._process(chunk, cell)
        finally:
            self.counters.retire(cell)

    def _process(self, chunk: Chunk, cell: CounterCell) -> None:
        cell.items_in += len(chunk.items)
        if chunk.attempts:
            cell.items_retried += len(chunk.items)
        began = cell.begin()
        try:
            outcomes = self.pool.process(chunk.run.id, chunk.items)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            outcomes = None
            failures = [Failure(item, exc, text) for item in chunk.items]
        cell.end(began)
        outcome = Outcome()
        if outcomes is None:
            outcome.failures = failures
        else:
            for item, result in zip(chunk.items, outcomes, strict=True):
                if result.error is not None:
                    outcome.failures.append(Failure(item, None, result.error, result.traceback))
                    continue
                if result.filtered and not result.routed:
                    outcome.filtered += 1
                outcome.outputs.extend(result.outputs)
                outcome.routed.extend(result.routed)
        self.complete(chunk, outcome, cell)
