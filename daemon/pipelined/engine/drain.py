"""The drain of one runtime, in a background thread.

Producers stop (generators closed at their next yield, queued runs cancelled), every run is
waited for (accumulators flush as their runs become quiescent), then the queues close and the
workers exit, calling close() on their instances. At the deadline whatever is left — queued,
waiting for a retry, held by a worker or an accumulator — is dead-lettered with error
"shutdown"; results that arrive later are discarded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pipelined.config.spec import PipelineSpec
from pipelined.engine.entry import EntryGate
from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import StageQueue
from pipelined.engine.retry import RetryTimer
from pipelined.engine.runs import Run

log = logging.getLogger("pipelined.engine")

AFTER_DEADLINE_S = 2.0  # how long runs get to settle after the deadline's dead letters
STUCK_WORKERS_S = 0.25  # how long workers still inside user code get after the deadline
WAIT_GRACE_S = 1.0  # a waiter whose timeout ends at the deadline also sees the deadline's outcome


class DrainedRuntime(Protocol):
    """What a drain needs of its runtime (`PipelineRuntime` is the one)."""

    @property
    def spec(self) -> PipelineSpec: ...

    @property
    def producers(self) -> Mapping[str, Any]: ...  # name -> ProducerStage

    @property
    def stages(self) -> Mapping[str, Any]: ...  # name -> a queue-fed stage

    @property
    def queues(self) -> Mapping[str, StageQueue]: ...

    @property
    def retry(self) -> RetryTimer: ...

    def wait_runs_ended(self, deadline: float) -> bool: ...

    def finish_drain(self) -> None: ...

    @property
    def gate(self) -> EntryGate: ...

    def leftover(
        self, stage: str, run: Run, items: list[Any], attempts: int, lineage: Lineage | None, held: int = 0
    ) -> None: ...


class Drainer:
    def __init__(self, runtime: DrainedRuntime, deadline: float) -> None:
        self.runtime = runtime
        self.deadline = deadline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{runtime.spec.name}:drain", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float | None) -> bool:
        """True once drained. A caller that waits until (about) the deadline — `?wait=true`
        with the default timeout, the pipeline's drain_timeout — also gets the moment the
        drain needs to dead-letter what is left then, so it sees `drained`, not a timeout."""
        began = time.monotonic()
        if self._done.wait(timeout):
            return True
        if timeout is not None and began + timeout >= self.deadline - 0.1:
            return self._done.wait(max(0.0, self.deadline - time.monotonic()) + WAIT_GRACE_S)
        return False

    def _run(self) -> None:
        rt = self.runtime
        try:
            for producer in rt.producers.values():
                for run in producer.stop():
                    run.source_finished(cancelled=True)
            if rt.wait_runs_ended(self.deadline):
                self._stop_workers(self.deadline + AFTER_DEADLINE_S)
            else:
                self._abandon()
                if rt.gate.buffer is None:  # with a disk buffer, the runs wait for the next version
                    rt.wait_runs_ended(time.monotonic() + AFTER_DEADLINE_S)
                # whatever a worker still computes is discarded: do not wait long for it
                self._stop_workers(time.monotonic() + STUCK_WORKERS_S)
        except BaseException:
            log.exception("drain failed", extra={"pipeline": rt.spec.name})
        finally:
            rt.finish_drain()
            self._done.set()

    def _stop_workers(self, until: float) -> None:
        rt = self.runtime
        for queue in rt.queues.values():
            queue.close()
        for stage in [*rt.producers.values(), *rt.stages.values()]:
            stop = getattr(stage, "stop_workers", None)
            if stop is not None:
                stop(max(0.1, until - time.monotonic()))
            else:
                stage.join(max(0.0, until - time.monotonic()))
        rt.retry.stop()

    def _abandon(self) -> None:
        rt = self.runtime
        stored = rt.gate.buffer is not None
        count = 0
        producing = [run for producer in rt.producers.values() for run in producer.abandon()]
        if stored:
            for run in producing:  # stopped by the drain: it ends "cancelled" once its items are done
                rt.gate.source_done(run, None, True)
            rt.gate.detached = True  # what is left stays in the buffer: nothing of it is acknowledged now
        for name, queue in rt.queues.items():
            for chunk in queue.abandon():
                if chunk.items:
                    rt.leftover(name, chunk.run, chunk.items, chunk.attempts, chunk.lineage)
                    count += len(chunk.items)
        for name, stage in rt.stages.items():
            for entry in stage.abandon():
                count += self._give_up(name, entry)
        for chunk, queue in rt.retry.take_all():
            rt.leftover(queue.stage, chunk.run, chunk.items, chunk.attempts, chunk.lineage)
            count += len(chunk.items)
        if not stored:
            for run in producing:
                run.source_finished(cancelled=True)
        log.warning(
            "drain deadline passed: %d items %s",
            count,
            "left in the disk buffer for the next start" if stored else 'dead-lettered with error "shutdown"',
            extra={"pipeline": rt.spec.name},
        )

    def _give_up(self, stage: str, entry: Any) -> int:
        """A chunk a worker held, or (run, items, lineage parts) an accumulator buffered."""
        rt = self.runtime
        if isinstance(entry, tuple):
            run, items, parts = entry
            at = 0
            for lineage, count in parts:
                rt.leftover(stage, run, items[at : at + count], 0, lineage, held=count)
                at += count
            return len(items)
        rt.leftover(stage, entry.run, entry.items, entry.attempts, entry.lineage)
        return len(entry.items)

