"""`buffer = "disk"`: items that enter a pipeline are kept in SQLite until everything derived
from them has finished (docs/durability.md has the whole design).

    buffer = DiskBuffer.for_pipeline(state_dir, "orders", sync="normal")   # BufferCorrupt / BufferOpenError
    rows, commit = buffer.append(run_id, "src", "out", first=1, items=[...])  # Unserializable, BufferUnavailable
    commit.wait()                       # the group commit that holds them (one per group, not per item)
    entry_id, count = rows[0]
    buffer.ack(entry_id, count, run_id, finished=..., filtered=..., dead_lettered=...)   # never blocks
    buffer.stored_runs(); up_to = buffer.begin_replay(); for entry in buffer.entries(up_to): ...
    buffer.stats(); buffer.close(remove=False)

Thread-safe; every write goes to the one writer thread (buffer_writer.py). The file is never
touched in a forked child: a fork disowns the connection there (it is neither used nor closed).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import pickle
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelined.engine import buffer_ops as w
from pipelined.engine.buffer_file import (
    BufferCorrupt,
    BufferOpenError,
    buffer_path,
    file_bytes,
    open_checked,
    remove_files,
)
from pipelined.engine.buffer_writer import BufferFailed, BufferWriter, Commit

__all__ = [
    "buffer_path",
    "BufferCorrupt",
    "BufferFailed",
    "BufferOpenError",
    "BufferUnavailable",
    "Commit",
    "DiskBuffer",
    "RestoreFailed",
    "StoredEntry",
    "StoredRun",
    "Unserializable",
]

SYNC_MODES = ("normal", "full")
MAX_ROW_ITEMS = 1024  # a larger group of items is split into rows of at most this many
MAX_ROW_BYTES = 16 * 1024 * 1024  # a row pickling larger than this is split (down to one item)
MAX_ITEM_BYTES = 256 * 1024 * 1024  # one item larger than this is refused (SQLite's blob limit is 1 GB)
PICKLE_PROTOCOL = 5
READ_PAGE = 64  # entries per read while replaying


class BufferUnavailable(Exception):
    """New items are refused: the disk is full or unwritable (the text says which)."""


class Unserializable(Exception):
    """An item cannot be pickled into the buffer; `index` is its place in the appended list."""

    def __init__(self, index: int, item: Any, error: BaseException) -> None:
        self.index = index
        self.error = error
        self.type_name = type(item).__qualname__
        super().__init__(
            f"item of type {self.type_name} cannot be saved in the disk buffer: "
            f"{type(error).__name__}: {error}"
        )


class RestoreFailed(Exception):
    """A stored entry cannot be unpickled any more (its class is gone or changed)."""


@dataclass(frozen=True)
class StoredEntry:
    id: int
    run: str
    stage: str
    kind: str  # "out": outputs of `stage` (a producer); "in": items into `stage`
    first: int  # 1-based number of the first item within its run (ctx.item_id)
    count: int
    replays: int  # how often this entry has been replayed (restarts, reloads)
    created: float  # time.time() when it was appended
    payload: bytes

    def items(self) -> list[Any]:
        """The items, unpickled; RestoreFailed naming the entry when that is impossible."""
        try:
            items = pickle.loads(self.payload)
        except BaseException as exc:
            raise RestoreFailed(
                f"buffered entry {self.id} (run {self.run}, stage {self.stage!r}, {self.count} items) "
                f"cannot be restored: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(items, list) or len(items) != self.count:
            raise RestoreFailed(f"buffered entry {self.id} (run {self.run}) holds {type(items).__name__}, not its items")
        return items


@dataclass(frozen=True)
class StoredRun:
    run: str
    stage: str
    kind: str  # "producer" | "inject" | "link" | "unknown" (entries without their run row)
    started_at: str
    source_done: bool
    cancelled: bool
    error: str | None
    produced: int
    finished: int
    filtered: int
    dead_lettered: int
    last_error: str | None
    priority: int
    parent: str | None
    pending_items: int  # items of this run still in the buffer


def _encode_rows(items: list[Any]) -> tuple[list[list[Any]], list[bytes]]:
    """Split into rows of at most MAX_ROW_ITEMS items and about MAX_ROW_BYTES; pickle each."""
    rows: list[list[Any]] = []
    payloads: list[bytes] = []
    todo = [(i, items[i : i + MAX_ROW_ITEMS]) for i in range(0, len(items), MAX_ROW_ITEMS)]
    while todo:
        at, row = todo.pop(0)
        try:
            payload = encode(row)
        except Unserializable as exc:
            raise Unserializable(at + exc.index, row[exc.index], exc.error) from None
        if len(payload) > MAX_ROW_BYTES and len(row) > 1:
            half = len(row) // 2
            todo[:0] = [(at, row[:half]), (at + half, row[half:])]
            continue
        if len(payload) > MAX_ITEM_BYTES:
            raise Unserializable(at, row[0], ValueError(f"{len(payload)} bytes pickled, more than {MAX_ITEM_BYTES}"))
        rows.append(row)
        payloads.append(payload)
    return rows, payloads


def encode(items: list[Any]) -> bytes:
    """Pickle a list of items; Unserializable naming the first item that cannot be pickled."""
    try:
        return pickle.dumps(items, protocol=PICKLE_PROTOCOL)
    except BaseException as exc:
        for index, item in enumerate(items):
            try:
                pickle.dumps(item, protocol=PICKLE_PROTOCOL)
            except BaseException as item_exc:
                raise Unserializable(index, item, item_exc) from None
        raise Unserializable(0, items, exc) from None


_live: weakref.WeakSet[DiskBuffer] = weakref.WeakSet()
_disowned: list[Any] = []


def _disown_all_in_child() -> None:
    """After fork(), in the child: the parent's connections must never be used or closed here.
    Each gets an extra reference that is never released, so not even interpreter exit closes
    (and checkpoints, or deletes the WAL of) a file the parent still writes."""
    for buffer in list(_live):
        conn = buffer._writer.disown()
        if conn is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
            _disowned.append(conn)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_all_in_child)


class DiskBuffer:
    def __init__(self, path: Path, pipeline: str, sync: str = "normal") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"buffer_sync: expected one of {', '.join(SYNC_MODES)}, got {sync!r}")
        self.path = Path(path)
        self.pipeline = pipeline
        self.sync = sync
        self._pid = os.getpid()
        conn = open_checked(self.path, pipeline, sync)  # BufferCorrupt / BufferOpenError
        try:
            last = conn.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key = 'next_run'").fetchone()
        except BaseException:
            conn.close()
            raise
        self.next_run = int(row[0]) if row else 1  # run numbers below this were used before
        self._ids = itertools.count(int(last) + 1)
        self._ids_lock = threading.Lock()
        self._writer = BufferWriter(self.path, sync, conn, pipeline)
        self._closed = False
        _live.add(self)

    @classmethod
    def for_pipeline(cls, state_dir: Path | str, pipeline: str, sync: str = "normal") -> DiskBuffer:
        return cls(buffer_path(Path(state_dir), pipeline), pipeline, sync)

    # -- state ------------------------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why new items are refused now (disk full, unwritable, failed), or None."""
        return self._writer.failed or self._writer.error

    def check_accepting(self) -> None:
        """BufferUnavailable while the disk refuses writes; BufferFailed once the buffer is dead."""
        self._check_pid()
        if self._writer.failed is not None:
            raise BufferFailed(self._writer.failed)
        if self._writer.error is not None:
            raise BufferUnavailable(self._writer.error)

    # -- writes -----------------------------------------------------------------------------
    def append(
        self, run: str, stage: str, kind: str, first: int, items: list[Any], *, refuse: bool = True
    ) -> tuple[list[tuple[int, int]], Commit]:
        """Queue `items` (pickled here, in rows of MAX_ROW_ITEMS); the rows as (entry id, number
        of items) — consecutive slices of `items`, in order — and the commit to wait for. `refuse`: BufferUnavailable at once while the disk refuses writes (a
        trigger answers 503); without it the items queue and the commit waits until the disk
        takes them (a producer blocks). Unserializable before anything is queued."""
        self._check_pid()
        if refuse:
            self.check_accepting()
        rows, payloads = _encode_rows(items)
        now = time.time()
        with self._ids_lock:
            ids = [next(self._ids) for _ in rows]
        ops = []
        at = first
        for entry_id, row, payload in zip(ids, rows, payloads, strict=True):
            ops.append((w.APPEND, entry_id, run, stage, kind, at, len(row), now, payload))
            at += len(row)
        return [(entry_id, len(row)) for entry_id, row in zip(ids, rows, strict=True)], self._writer.submit_many(ops)

    def ack(
        self,
        entry_id: int,
        count: int,
        run: str | None = None,
        *,
        finished: int = 0,
        filtered: int = 0,
        dead_lettered: int = 0,
        last_error: str | None = None,
    ) -> None:
        """Everything derived from the entry finished: delete it (in the next group) and add what
        its items did to the run's stored counters."""
        self._check_pid()
        ops: list[tuple[Any, ...]] = [(w.ACK, entry_id, count)]
        if run is not None and (finished or filtered or dead_lettered or last_error):
            ops.append((w.COUNTERS, run, finished, filtered, dead_lettered, last_error))
        self._submit_quietly(ops)

    def begin_run(
        self, run: str, stage: str, kind: str, started_at: str, *, priority: int = 0, parent: str | None = None
    ) -> Commit:
        self._check_pid()
        number = int(run.rsplit("-", 1)[-1]) if run.rsplit("-", 1)[-1].isdigit() else 0
        return self._writer.submit((w.BEGIN_RUN, run, stage, kind, started_at, priority, parent, number))

    def source_done(self, run: str, error: str | None = None, cancelled: bool = False) -> Commit | None:
        """The run's producer finished (or the trigger's items are in): it produces no more.
        The commit to wait for (None: the buffer is dead)."""
        self._check_pid()
        return self._submit_quietly([(w.SOURCE_DONE, run, error, cancelled)])

    def end_run(self, run: str) -> None:
        self._check_pid()
        self._submit_quietly([(w.END_RUN, run)])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed (False on timeout)."""
        self._check_pid()
        return self._writer.submit((w.BARRIER,)).wait(timeout)

    def _submit_quietly(self, ops: list[tuple[Any, ...]]) -> Commit | None:
        # a dead buffer: what it held is replayed (or kept aside) at the next start
        with contextlib.suppress(BufferFailed):
            return self._writer.submit_many(ops)
        return None

    # -- reads (replay) ---------------------------------------------------------------------
    def stored_runs(self) -> list[StoredRun]:
        """Every run the file knows that has not ended, with its stored counters."""
        self._check_pid()
        return list(self._writer.read(_read_runs))

    def begin_replay(self) -> int:
        """Everything committed so far is about to be replayed once more: count that replay
        (`replays` + 1) and return the last entry id that belongs to it."""
        self._check_pid()
        self.flush()
        up_to = int(self._writer.read(lambda c: c.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()[0]))
        if up_to:
            self._writer.submit((w.REPLAYED, up_to)).wait()
        return up_to

    def entries(self, up_to: int, after: int = 0, page: int = READ_PAGE) -> Iterator[StoredEntry]:
        """The stored entries with `after` < id <= `up_to`, oldest first, read a page at a time
        (short reads in the writer thread: no reader is ever left open)."""
        while True:
            rows: list[tuple[Any, ...]] = self._writer.read(functools.partial(_read_page, after, up_to, page))
            if not rows:
                return
            for row in rows:
                yield StoredEntry(*row)
            after = rows[-1][0]

    # -- status -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        writer = self._writer
        oldest = writer.oldest_created
        return {
            "kind": "disk",
            "sync": self.sync,
            "items": max(0, writer.items),
            "bytes": file_bytes(self.path),
            "oldest_age_s": round(max(0.0, time.time() - oldest), 3) if oldest is not None and writer.items else 0.0,
            "commits_per_s": round(writer.commit_rate(), 1),
            "error": self.error,
        }

    def close(self, timeout: float = 10.0, *, remove: bool = False) -> None:
        """Commit what is queued (up to `timeout` if the disk refuses), checkpoint, close;
        `remove` then deletes the file (DELETE of the pipeline)."""
        if self._closed or os.getpid() != self._pid:
            return
        self._closed = True
        self._writer.close(timeout)
        _live.discard(self)
        if remove:
            remove_files(self.path)

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            raise BufferFailed(f"disk buffer {self.path} used in a forked process (pid {os.getpid()})")


def _read_page(after: int, up_to: int, page: int, conn: Any) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT id, run, stage, kind, first, count, replays, created, payload FROM entries"
        " WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
        (after, up_to, page),
    ).fetchall()
    return [(*row[:8], bytes(row[8])) for row in rows]


def _read_runs(conn: Any) -> list[StoredRun]:
    pending = dict(conn.execute("SELECT run, sum(count) FROM entries GROUP BY run").fetchall())
    runs = []
    for row in conn.execute(
        "SELECT run, stage, kind, started_at, source_done, cancelled, error, produced, finished, filtered,"
        " dead_lettered, last_error, priority, parent FROM runs ORDER BY run"
    ).fetchall():
        (run, stage, kind, started_at, source_done, cancelled, error, produced, finished, filtered, dead, last_error,
         priority, parent) = row  # fmt: skip
        runs.append(StoredRun(run, stage, kind, started_at, bool(source_done), bool(cancelled), error, produced,
                              finished, filtered, dead, last_error, priority, parent, int(pending.pop(run, 0))))
    for run, count in pending.items():  # entries whose run row is gone: replay them anyway
        stage = conn.execute("SELECT stage FROM entries WHERE run = ? ORDER BY id LIMIT 1", (run,)).fetchone()[0]
        runs.append(StoredRun(run, stage, "unknown", "", True, False, None, 0, 0, 0, 0, None, 0, None, int(count)))
    return runs
