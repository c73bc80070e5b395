"""A runtime's side of the disk buffer: opening it at start, injected items that must be stored
before the trigger is answered, and the replay of what a crash, a drain deadline or an earlier
version left in it (docs/durability.md, "Restart: replay").
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pipelined.engine.buffer_writer import BufferFailed
from pipelined.engine.disk_buffer import (
    BufferCorrupt,
    BufferOpenError,
    BufferUnavailable,
    DiskBuffer,
    RestoreFailed,
    StoredEntry,
    StoredRun,
)
from pipelined.engine.entry import EntryGate
from pipelined.engine.hooks import ItemGivenUp
from pipelined.engine.queues import QueueAbandoned, QueueRejected
from pipelined.engine.router import Target, inject
from pipelined.engine.runs import Run
from pipelined.errors import BadRequest, QueueFull, StartError, Unavailable

PipelineRuntime = Any  # engine/runtime.py's, which imports this module

log = logging.getLogger("pipelined.engine")

REMOVED = "stage removed by reload"
RETRY_FULL_S = 0.05  # a replayed row that a full "reject" queue refuses is offered again after this
LEFTOVER_POLL_S = 0.5


def open_gate(rt: PipelineRuntime) -> Replay | None:
    """Set `rt.gate` up (disk buffer, item numbers); the Replay of what is stored, if anything.
    Called by start() after the stages are built, before any of them runs."""
    spec = rt.spec
    track_ids = _wants_ids(rt)
    try:
        if spec.buffer == "disk":
            buffer: DiskBuffer | None = rt.book.open_buffer(spec.buffer_sync)
            stored = buffer
        else:
            buffer = None
            stored = rt.book.leftover_buffer()  # a disk version before this one left items
    except (BufferCorrupt, BufferOpenError, RuntimeError) as exc:
        raise StartError(f"pipeline {spec.name!r}: disk buffer: {exc}") from exc
    rt.gate = EntryGate(spec.name, buffer, track_ids)
    if stored is None:
        return None
    replay = Replay(rt, stored, rt.gate if buffer is not None else EntryGate(spec.name, stored, track_ids))
    return replay if replay.prepare() else None


def _wants_ids(rt: PipelineRuntime) -> bool:
    """Does any stage's callable take `ctx` (and so may read ctx.item_id)?"""
    for stage in rt.stages.values():
        invoker = getattr(stage, "invoker", None)
        make = getattr(stage, "make_invoker", None)
        if invoker is None and make is not None:
            invoker = make()
        if (invoker is not None and invoker.wants_ctx) or getattr(stage, "wants_ctx", False):
            return True  # (a process stage says so itself: its callable runs in its workers)
    return False


def inject_durably(rt: PipelineRuntime, run: Run, stage: str, items: list[Any], timeout: float) -> str:
    """A trigger's items: numbered, stored (the 202 waits for the commit), then queued."""
    where = f"pipeline {rt.spec.name!r}, stage {stage!r}"
    gate = rt.gate
    assert rt.hooks is not None
    error = rt.hooks.before_run(run.to_dict()) if rt.hooks.has_run_hooks else None
    if error is not None:
        run.source_finished(error)
        return run.id
    admission = None

    def refuse(exc: Exception) -> Exception:
        gate.cancel(admission.lineage if admission is not None else None)
        gate.end_run(run)
        rt._forget_run(run)
        return exc

    try:
        gate.begin_run(run, "inject")
        admission = gate.admit(run, stage, "in", items, 1, refuse=True)
        if admission.refused:
            index, _, text = admission.refused[0]
            raise refuse(BadRequest(f"{where}: items[{index}]: {text}"))
        if admission.commit is not None and not admission.commit.wait(timeout):
            why = gate.buffer.error if gate.buffer is not None else None
            raise refuse(Unavailable(
                f"{where}: the disk buffer did not store {len(items)} items within {timeout:g} s"
                + (f": {why}" if why else "")
            ))
    except (BufferUnavailable, BufferFailed) as exc:
        raise refuse(Unavailable(f"{where}: {exc}")) from None
    gate.source_done(run, None, False)
    lineage, ids, items = admission.lineage, admission.ids, admission.items
    n = len(items)
    run.settle(produced=n, enter=n, lineage=lineage)  # in flight while they are handed over
    try:  # into every queue they reach (a nested pipeline's children), or into none
        finished = inject(rt._targets[stage], run, items, timeout, lineage, ids)
    except QueueRejected as exc:
        queue = rt.queues[str(exc)]
        whose = "its queue" if queue.stage == stage else f"the queue of stage {queue.stage!r}"
        raise refuse(QueueFull(
            f"{where}: {whose} has no room for {n} items ({queue.depth}/{queue.capacity} queued, "
            f'on_full = "reject")'
        )) from None
    except TimeoutError as exc:
        whose = "" if str(exc) == stage else f" into stage {str(exc)!r}"
        raise refuse(Unavailable(
            f'{where}: could not enqueue {n} items{whose} within {timeout:g} s (queue full, on_full = "block")'
        )) from None
    except QueueAbandoned:
        raise refuse(Unavailable(
            f"{where}: the pipeline drained before there was room for {n} items; none was accepted"
        )) from None
    run.settle(leave=n, finished=finished, lineage=lineage)
    if lineage is not None:
        lineage.seal()
    run.source_finished()
    return run.id


class Replay:
    """What is stored goes back where it had entered, in the order it entered."""

    def __init__(self, rt: PipelineRuntime, buffer: DiskBuffer, gate: EntryGate) -> None:
        self.rt = rt
        self.buffer = buffer
        self.gate = gate
        self.runs: dict[str, tuple[Run, StoredRun]] = {}
        self.up_to = 0
        self._targets: dict[tuple[str, str], Target | None] = {}
        self._thread = threading.Thread(target=self._run, name=f"{rt.spec.name}:replay", daemon=True)
        self.done = threading.Event()

    def prepare(self) -> bool:
        """Bring the stored runs back (recovered, counters as stored); False: nothing stored."""
        rt = self.rt
        stored = self.buffer.stored_runs()
        if not stored:
            if rt.gate.buffer is None:  # a memory version: the old file has nothing left
                rt.book.close_buffer(remove=True)
            return False
        self.up_to = self.buffer.begin_replay()
        for record in stored:
            run = rt.book.runs.find(record.run)
            if run is None:  # after a restart: it comes back under its own id
                run = Run(record.run, rt.spec.name, record.stage, rt, record.priority, record.parent)
                run.recovered = True
                if record.started_at:
                    run.started_at = record.started_at
                rt.book.runs.adopt(run)
            error = record.error
            # a trigger's items are stored in one commit before its 202, a linked run's before
            # the sender is told they were taken; the end-of-input mark follows in a later
            # group, which a kill may cut off: neither is ever interrupted (only a producer is)
            if not record.source_done and record.kind not in ("inject", "link"):
                error = error or f"interrupted by a restart after {record.produced} items"
            run.reset_for_replay(
                rt, produced=record.produced, finished=record.finished, filtered=record.filtered,
                dead_lettered=record.dead_lettered, last_error=record.last_error, error=error,
            )  # fmt: skip
            with rt._runs_cond:
                rt._runs.add(run)
            self.runs[record.run] = (run, record)
        log.info("replaying %d stored items of %d runs from the disk buffer",
                 sum(r.pending_items for r in stored), len(stored), extra={"pipeline": rt.spec.name})  # fmt: skip
        return True

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        rt = self.rt
        complete = False
        try:
            for entry in self.buffer.entries(self.up_to):
                if rt.stopping():
                    break  # a drain: the rest stays stored for the next start
                self._replay(entry)
            else:
                complete = True
        except Exception:
            log.exception("replaying the disk buffer failed", extra={"pipeline": rt.spec.name})
        finally:
            if complete:  # the replay was these runs' source: they end once their items are done
                for run, record in self.runs.values():
                    run.source_finished(cancelled=record.cancelled)
            self.done.set()
        if complete and rt.gate.buffer is None:
            self._remove_when_empty()

    def _replay(self, entry: StoredEntry) -> None:
        rt = self.rt
        run = self.runs[entry.run][0]
        lineage = self.gate.replayed(run, entry)
        try:
            items = entry.items()
        except RestoreFailed as exc:
            log.error("%s", exc, extra={"pipeline": rt.spec.name, "run": run.id})
            placeholders = [{"buffered_entry": entry.id, "index": i} for i in range(entry.count)]
            rt.dead_letter(entry.stage, run, placeholders, entry.replays, exc, text=str(exc), entered=False,
                           lineage=lineage)  # fmt: skip
            lineage.seal()
            return
        target = self._target(entry.stage, entry.kind)
        if target is None:
            rt.dead_letter(entry.stage, run, items, 0, ItemGivenUp(REMOVED), text=REMOVED, entered=False,
                           lineage=lineage)  # fmt: skip
            lineage.seal()
            return
        ids = range(entry.first, entry.first + entry.count) if self.gate.track_ids else None
        while True:
            try:
                finished = target.send(run, items, lineage, ids)
                if finished:
                    run.settle(finished=finished, lineage=lineage)
                break
            except QueueAbandoned:
                break
            except QueueRejected:
                if rt.stopping():
                    break
                time.sleep(RETRY_FULL_S)  # stored items are never refused: wait for room
        lineage.seal()

    def _target(self, stage: str, kind: str) -> Target | None:
        """Where a row goes: a producer's outputs to its downstream, injected items into their
        stage; None when this version has no such stage (of that kind)."""
        key = (stage, kind)
        if key not in self._targets:
            rt = self.rt
            spec = rt.spec.stage(stage)
            target: Target | None = None
            if spec is not None and kind == "out" and spec.kind == "producer":
                target = rt._builder.outputs(stage)
            elif spec is not None and kind != "out" and spec.kind != "producer":
                target = rt.target_for(stage)
            self._targets[key] = target
        return self._targets[key]

    def _remove_when_empty(self) -> None:
        """A memory version took over a file: remove it once what was replayed is done."""
        rt = self.rt
        while not rt.stopping():
            if self.buffer.flush(5.0) and self.buffer.stats()["items"] == 0:
                rt.book.close_buffer(remove=True)
                return
            time.sleep(LEFTOVER_POLL_S)
