"""The daemon's side of one producer run in a pool worker (see producing.py for the worker's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from pipelined.config.spec import StageSpec
from pipelined.workers import protocol
from pipelined.workers.handle import WorkerDied, WorkerHandle, WorkerStartFailed
from pipelined.workers.outcome import ProducerFailed

CANCEL_GRACE = 10.0


class WorkerSlot:
    """One of a pool's places for a worker process (None while it is being replaced)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker: WorkerHandle | None = None


class SlotOwner(Protocol):
    """What a producer run needs of its pool (`PoolStage` is the one)."""

    @property
    def stage_spec(self) -> StageSpec: ...

    @property
    def stopping(self) -> bool: ...

    def replace_worker(self, slot: WorkerSlot) -> WorkerHandle: ...


class ProducerRun:
    def __init__(self, pool: SlotOwner, slot: WorkerSlot, run_id: str, call_args: Mapping[str, Any],
                 emit_to: Callable[[str, Any], None] | None) -> None:
        self.pool = pool
        self.slot = slot
        self.run_id = run_id
        self.call_args = dict(call_args)
        self.emit_to = emit_to
        self.stage = pool.stage_spec.name

    def _worker(self) -> WorkerHandle:
        if self.slot.worker is not None:
            return self.slot.worker
        try:
            return self.pool.replace_worker(self.slot)
        except (WorkerStartFailed, WorkerDied) as failure:
            raise ProducerFailed(f"WorkerStartFailed: stage {self.stage!r}: a worker did not start: {failure}") from None

    def items(self) -> Iterator[Any]:
        worker = self._worker()
        done = False
        try:
            worker.send((protocol.PRODUCE, self.run_id, self.call_args))
            while not done:
                kind, payload = worker.receive()
                done = kind == protocol.DONE
                self._route(payload[1])
                yield from payload[0]
                if done and payload[2] is not None:
                    raise ProducerFailed(*payload[2])
        except WorkerDied as death:
            done = True
            self._lost(worker)
            raise ProducerFailed(f"WorkerDied: worker died: {death.description} (stage {self.stage!r})") from None
        finally:
            if not done:
                self._cancel(worker)

    def _route(self, routed: list[tuple[str, Any]]) -> None:
        for stage, item in routed:
            if self.emit_to is None:
                raise ProducerFailed(f"RuntimeError: stage {self.stage!r}: ctx.emit_to({stage!r}) is not available here")
            self.emit_to(stage, item)

    def _cancel(self, worker: WorkerHandle) -> None:
        """Stop the producer at its next yield; what it still sends is discarded."""
        deadline = time.monotonic() + CANCEL_GRACE
        worker.set_stopping()  # ctx.stopping becomes true for this run
        try:
            worker.send((protocol.CANCEL,))
            while worker.receive(deadline)[0] != protocol.DONE:
                pass
        except WorkerDied:
            self._lost(worker)
            return
        if not self.pool.stopping:
            worker.progress[1] = 0

    def _lost(self, worker: WorkerHandle) -> None:
        worker.kill()
        worker.conn.close()
        self.slot.worker = None
