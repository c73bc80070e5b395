"""The disk buffer's writer thread: the only user of the buffer's SQLite connection.

Callers queue small operation tuples (`submit`; buffer_ops.py) and get the `Commit` of the
group they joined; the writer takes *everything* queued in one step and applies it in one
transaction (group commit: while one commit runs, the next group gathers), then wakes every
waiter of that group at once. An entry acknowledged in the same group that appends it is never written at all.
Reads (`read`) run on the same connection after the group's commit, so there is never a second
connection, never a long-lived reader, and checkpoints always complete.

Disk full, read-only or I/O errors roll the group back and keep it: it is retried (with backoff,
reconnecting when the connection itself failed) until it commits, and `error` says why new
items are refused meanwhile. Corruption (or any other error) fails the group and every later
one: `failed` is set and waiters get BufferFailed.

Between groups, at most every MAINTENANCE_S (and when idle), the writer checkpoints the WAL
with TRUNCATE and hands free pages back (`incremental_vacuum`), so neither the WAL nor the file
keep their peak size once a backlog is worked off.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pipelined.engine.buffer_file import connect, is_corrupt, is_unavailable
from pipelined.engine.buffer_ops import apply_group

log = logging.getLogger("pipelined.engine")

MAINTENANCE_S = 2.0
IDLE_MAINTENANCE_S = 0.5  # idle this long after a commit: checkpoint now
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
VACUUM_MIN_FREE_PAGES = 256
OLDEST_REFRESH_S = 0.25
RATE_SLOTS = 7

class BufferFailed(Exception):
    """The buffer cannot write any more (corrupt file, closed); nothing more is accepted."""


class Commit:
    """One group's commit; every caller that joined the group waits on the same object."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: str | None = None

    def finish(self, error: str | None = None) -> None:
        self._error = error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once committed, False on timeout; BufferFailed when the group was given up."""
        if not self._done.wait(timeout):
            return False
        if self._error is not None:
            raise BufferFailed(self._error)
        return True


class BufferWriter:
    def __init__(self, path: Path, sync: str, conn: sqlite3.Connection, pipeline: str) -> None:
        self.path = path
        self.sync = sync
        self.pipeline = pipeline
        self._conn: sqlite3.Connection | None = conn
        self._ops: list[tuple[Any, ...]] = []
        self._reads: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
        self._group = Commit()
        self._cond = threading.Condition()
        self._idle = False
        self._closing = False
        self._close_by = 0.0
        self.error: str | None = None  # why the buffer refuses new items right now (None: it does not)
        self.failed: str | None = None  # the buffer is dead (corrupt, closed)
        self.items = int(conn.execute("SELECT coalesce(sum(count), 0) FROM entries").fetchone()[0])
        self.oldest_created: float | None = None
        self.commits = 0
        self.last_commit_at = 0.0
        self._per_second = [[0, 0] for _ in range(RATE_SLOTS)]  # [second, commits], slot = second % RATE_SLOTS
        self._dirty = False  # committed since the last checkpoint
        self._last_maintenance = time.monotonic()
        self._oldest_at = 0.0
        self._refresh_oldest(conn)
        self._extra = {"pipeline": pipeline}
        self._thread = threading.Thread(target=self._loop, name=f"{pipeline}:buffer", daemon=True)
        self._thread.start()

    # -- callers ----------------------------------------------------------------------------
    def submit(self, op: tuple[Any, ...]) -> Commit:
        with self._cond:
            if self.failed is not None:
                raise BufferFailed(self.failed)
            self._ops.append(op)
            if self._idle:
                self._idle = False
                self._cond.notify()
            return self._group

    def submit_many(self, ops: list[tuple[Any, ...]]) -> Commit:
        with self._cond:
            if self.failed is not None:
                raise BufferFailed(self.failed)
            self._ops.extend(ops)
            if self._idle:
                self._idle = False
                self._cond.notify()
            return self._group

    def read(self, fn: Callable[[sqlite3.Connection], Any], timeout: float | None = None) -> Any:
        """Run `fn(connection)` in the writer thread after the current group commits."""
        future: Future[Any] = Future()
        with self._cond:
            if self.failed is not None:
                raise BufferFailed(self.failed)
            self._reads.append((fn, future))
            self._idle = False
            self._cond.notify()
        return future.result(timeout)

    def commit_rate(self, window: int = RATE_SLOTS - 2) -> float:
        """Commits per second over the last `window` whole seconds."""
        now = int(time.monotonic())
        total = sum(count for second, count in list(self._per_second) if now - window <= second < now)
        return total / window

    def close(self, timeout: float) -> None:
        """Commit what is queued (retrying until `timeout` if the disk refuses), checkpoint, close."""
        with self._cond:
            self._closing = True
            self._close_by = time.monotonic() + timeout
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout + 5.0)

    def disown(self) -> Any:
        """In a forked child: forget the connection without closing it (returns it)."""
        conn, self._conn = self._conn, None
        self.failed = "the disk buffer belongs to the parent process"
        return conn

    # -- the writer thread ------------------------------------------------------------------
    def _loop(self) -> None:
        pending: list[tuple[Any, ...]] = []
        groups: list[Commit] = []
        delay = RETRY_FIRST_S
        while True:
            with self._cond:
                while not (self._ops or self._reads or self._closing) and not pending:
                    self._idle = True
                    if not self._cond.wait(self._maintenance_wait()):
                        self._idle = False
                        self._maintain()
                self._idle = False
                closing = self._closing
                if self._ops:
                    pending.extend(self._ops)
                    self._ops = []
                    groups.append(self._group)
                    self._group = Commit()
                reads, self._reads = self._reads, []
            if pending:
                outcome = self._commit(pending)
                if outcome is None:
                    for group in groups:
                        group.finish()
                    pending, groups, delay = [], [], RETRY_FIRST_S
                elif outcome == "retry":
                    if closing and time.monotonic() >= self._close_by:
                        self._give_up(groups, f"closed while unavailable: {self.error}")
                        pending, groups = [], []
                    else:
                        self._serve(reads)
                        time.sleep(delay)
                        delay = min(RETRY_MAX_S, delay * 2)
                        continue
                else:
                    self._give_up(groups, outcome)
                    pending, groups = [], []
            self._serve(reads)
            if closing and not pending:
                with self._cond:
                    if self._ops or self._reads:
                        continue
                    self.failed = self.failed or "the disk buffer is closed"
                self._shutdown()
                return
            if time.monotonic() - self._last_maintenance >= MAINTENANCE_S:
                self._maintain()

    def _maintenance_wait(self) -> float | None:
        if not self._dirty:
            return None
        due = max(self.last_commit_at, self._last_maintenance) + IDLE_MAINTENANCE_S
        return max(0.0, due - time.monotonic())

    def _commit(self, ops: list[tuple[Any, ...]]) -> str | None:
        """None when committed; "retry" when the disk refused (kept); else why it failed for good."""
        conn = self._conn
        try:
            if conn is None:
                conn = self._conn = connect(self.path, self.sync)
            added = apply_group(conn, ops)
        except Exception as exc:
            return self._refused(exc)
        self.items += added
        self.commits += 1
        self.last_commit_at = time.monotonic()
        second = int(self.last_commit_at)
        slot = self._per_second[second % RATE_SLOTS]
        if slot[0] != second:
            slot[0], slot[1] = second, 0
        slot[1] += 1
        self._dirty = True
        if self.error is not None:
            log.warning("disk buffer %s writable again; accepting items", self.path, extra=self._extra)
            self.error = None
        if (
            self.last_commit_at - self._oldest_at >= OLDEST_REFRESH_S
            or not self.items
            or self.oldest_created is None
        ):
            self._refresh_oldest(conn)
        return None

    def _refused(self, exc: Exception) -> str:
        conn = self._conn
        if conn is not None:
            try:
                if conn.in_transaction:
                    conn.rollback()
            except sqlite3.Error:
                self._drop_connection()
        if is_unavailable(exc) and not is_corrupt(exc):
            if self.error is None:
                log.error("disk buffer %s cannot write: %s; refusing new items until it can",
                          self.path, exc, extra=self._extra)
            self.error = f"disk buffer unavailable: {exc}"
            if not isinstance(exc, sqlite3.Error) or "full" not in str(exc):
                self._drop_connection()  # an I/O error or a read-only file: open it afresh next time
            return "retry"
        text = f"disk buffer {'corrupt' if is_corrupt(exc) else 'failed'}: {type(exc).__name__}: {exc}"
        log.error("%s; the pipeline cannot accept items", text, extra=self._extra)
        with self._cond:
            self.failed = text
        return text

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _give_up(self, groups: list[Commit], why: str) -> None:
        for group in groups:
            group.finish(why)

    def _serve(self, reads: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        for fn, future in reads:
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = connect(self.path, self.sync)
                future.set_result(fn(conn))
            except BaseException as exc:
                future.set_exception(exc)

    def _refresh_oldest(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT created FROM entries ORDER BY id LIMIT 1").fetchone()
        self.oldest_created = None if row is None else float(row[0])
        self._oldest_at = time.monotonic()

    def _maintain(self) -> None:
        """Checkpoint (TRUNCATE) and give free pages back; errors only logged."""
        self._last_maintenance = time.monotonic()
        conn = self._conn
        if conn is None or not self._dirty or self.error is not None:
            return
        try:
            self._refresh_oldest(conn)  # a throttled refresh may have missed the last acks
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            if free >= VACUUM_MIN_FREE_PAGES and free * 4 >= pages:
                # executescript steps it to the end (execute() frees a single page)
                conn.executescript(f"PRAGMA incremental_vacuum({int(free)});")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._dirty = False
        except sqlite3.Error as exc:
            log.warning("disk buffer %s: checkpoint failed: %s", self.path, exc, extra=self._extra)

    def _shutdown(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        try:
            conn.close()
        except sqlite3.Error as exc:
            log.warning("disk buffer %s: close failed: %s", self.path, exc, extra=self._extra)

