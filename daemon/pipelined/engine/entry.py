"""Where items enter a pipeline: the disk buffer, lineages, item numbers, producer deliveries.

`EntryGate.admit` is called wherever items enter (a producer's slice, a trigger's items); it
numbers them within their run (`ctx.item_id`, when tracked), writes them to the disk buffer
(`buffer = "disk"`) and gives each stored row a lineage whose end acknowledges the row. A
memory pipeline that tracks nothing gets `None` and pays nothing. `Deliveries` gives a producer
run's `ctx.on_delivered` callbacks their moment: once every item pulled before them has
finished (memory) or is committed (disk). docs/durability.md has the design.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pipelined.engine.buffer_writer import Commit
from pipelined.engine.disk_buffer import DiskBuffer, Unserializable, encode
from pipelined.engine.lineage import Lineage
from pipelined.engine.runs import Run

log = logging.getLogger("pipelined.engine")

class Admission(NamedTuple):
    items: list[Any]  # what entered (`refused` left out)
    ids: Sequence[int] | None  # their numbers within the run, when tracked
    lineage: Lineage | None  # None: nothing tracks them (a plain memory pipeline)
    commit: Commit | None  # None: nothing to wait for (memory)
    refused: list[tuple[int, Any, str]]  # (index, item, error) of items that cannot be stored


class EntryGate:
    def __init__(self, pipeline: str, buffer: DiskBuffer | None, track_ids: bool) -> None:
        self.pipeline = pipeline
        self.buffer = buffer
        self.track_ids = track_ids
        self.detached = False  # the drain deadline passed: what is left stays stored, never acknowledged

    def admit(
        self,
        run: Run,
        stage: str,
        kind: str,
        items: list[Any],
        first: int,
        *,
        refuse: bool,
        on_done: Callable[[Lineage], None] | None = None,
    ) -> Admission:
        """Number `items` (the first is item `first` of its run) and store them.

        refuse: BufferUnavailable at once while the disk refuses writes (triggers); otherwise
        the commit waits for the disk (producers block on it). Items that cannot be pickled
        are left out (`refused`); the others keep their numbers."""
        buffer = self.buffer
        numbers = range(first, first + len(items))
        if buffer is None:
            lineage = Lineage(on_done) if on_done is not None else None
            return Admission(items, numbers if self.track_ids else None, lineage, None, [])
        refused: list[tuple[int, Any, str]] = []
        try:
            groups = [(items, numbers)]
            rows, commit = buffer.append(run.id, stage, kind, first, items, refuse=refuse)
        except Unserializable:
            groups, refused = _split_unpicklable(items, numbers)
            rows, commit = [], None
            for group, group_numbers in groups:
                more, commit = buffer.append(run.id, stage, kind, group_numbers.start, group, refuse=refuse)
                rows.extend(more)
        kept = items if not refused else [item for group, _ in groups for item in group]
        ids: Sequence[int] | None = None
        if self.track_ids:
            ids = numbers if not refused else [n for _, group_numbers in groups for n in group_numbers]
        lineage = Lineage(self._entries_done, entries=rows, tag=run.id) if rows else None
        return Admission(kept, ids, lineage, commit, refused)

    def replayed(self, run: Run, entry: Any) -> Lineage:
        """The lineage of a stored row being replayed."""
        return Lineage(self._entries_done, entries=[(entry.id, entry.count)], replays=entry.replays, tag=run.id)

    def _entries_done(self, lineage: Lineage) -> None:
        buffer = self.buffer
        if buffer is None or self.detached:
            return
        for n, (entry_id, count) in enumerate(lineage.entries):
            if n:
                buffer.ack(entry_id, count)
            else:  # what its items did is counted once, with its first row
                buffer.ack(entry_id, count, lineage.tag, finished=lineage.finished, filtered=lineage.filtered,
                           dead_lettered=lineage.dead_lettered, last_error=lineage.last_error)

    def cancel(self, lineage: Lineage | None) -> None:
        """Stored rows whose trigger was answered with an error after all: delete them."""
        if self.buffer is not None and lineage is not None:
            for entry_id, count in lineage.entries:
                self.buffer.ack(entry_id, count)

    # -- runs -------------------------------------------------------------------------------
    def begin_run(self, run: Run, kind: str) -> Commit | None:
        if self.buffer is None:
            return None
        return self.buffer.begin_run(
            run.id, run.stage, kind, run.started_at, priority=run.priority, parent=run.parent
        )

    def source_done(self, run: Run, error: str | None, cancelled: bool) -> Commit | None:
        """Store the run's end-of-input mark; the commit to wait for (None: nothing to wait for)."""
        if self.buffer is not None and not self.detached:
            return self.buffer.source_done(run.id, error, cancelled)
        return None

    def end_run(self, run: Run) -> None:
        if self.buffer is not None and not self.detached:
            self.buffer.end_run(run.id)


def _split_unpicklable(
    items: list[Any], numbers: range
) -> tuple[list[tuple[list[Any], range]], list[tuple[int, Any, str]]]:
    """Contiguous groups of items that pickle (with their numbers), and those that do not."""
    groups: list[tuple[list[Any], range]] = []
    refused: list[tuple[int, Any, str]] = []
    start = 0
    for index, item in enumerate(items):
        try:
            encode([item])
        except Unserializable as exc:
            if index > start:
                groups.append((items[start:index], numbers[start:index]))
            refused.append((index, item, str(exc)))
            start = index + 1
    if start < len(items):
        groups.append((items[start:], numbers[start:]))
    return groups, refused


class Deliveries:
    """A producer run's `ctx.on_delivered` callbacks, called in order once every item pulled
    before them has finished (lineages, memory) or is in the buffer (commits, disk)."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []  # registered since the last slice was sent
        self._slices: deque[list[Any]] = deque()  # [done, callbacks]
        self._lock = threading.Lock()

    @property
    def wanted(self) -> bool:
        return bool(self.pending) or bool(self._slices)

    def add(self, callback: Callable[[], None]) -> None:
        self.pending.append(callback)

    def slice_sent(self) -> list[Any]:
        """A slice went downstream: the callbacks registered so far wait for it (and those before)."""
        entry: list[Any] = [False, self.pending]
        self.pending = []
        with self._lock:
            self._slices.append(entry)
        return entry

    def mark_done(self, entry: list[Any]) -> None:
        """That slice is delivered: run every callback whose slices are all delivered, in order."""
        with self._lock:
            entry[0] = True
            while self._slices and self._slices[0][0]:
                for callback in self._slices.popleft()[1]:
                    try:
                        callback()
                    except Exception:
                        log.exception("an on_delivered callback failed")

    def finish(self) -> None:
        """The producer is done: callbacks registered after its last slice wait for the others."""
        if self.pending:
            self.mark_done(self.slice_sent())
