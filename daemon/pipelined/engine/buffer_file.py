"""The disk buffer's SQLite file: schema, pragmas, opening with a check, corruption quarantine.

One file per pipeline, `<state_dir>/buffers/<pipeline>.sqlite3`, opened by exactly one
connection in the daemon (the buffer's writer thread), in WAL mode with `locking_mode =
EXCLUSIVE`: no `-shm` file, no second reader or process can open it while the daemon has it
(a second daemon on the same state dir gets a clear error instead of sharing it). See
docs/durability.md for the layout and why.

    entries(id, run, stage, kind, first, count, replays, created, payload)
        one row per group of items that entered together (a producer's slice, a trigger's
        items, at most MAX_ROW_ITEMS each); deleted when every item derived from it finished
    runs(run, stage, kind, started_at, source_done, cancelled, error, produced, finished, filtered,
         dead_lettered, last_error, priority, parent)
        one row per run that has entered items and not ended; counters of acknowledged rows
    meta(key, value)    format, pipeline, created, next_run
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

FORMAT = 1
BUSY_TIMEOUT_MS = 2000
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024  # the WAL file is cut back to this after a checkpoint
WAL_AUTOCHECKPOINT_PAGES = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value
);
CREATE TABLE IF NOT EXISTS runs (
    run           TEXT PRIMARY KEY,
    stage         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    source_done   INTEGER NOT NULL DEFAULT 0,
    cancelled     INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    produced      INTEGER NOT NULL DEFAULT 0,
    finished      INTEGER NOT NULL DEFAULT 0,
    filtered      INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    parent        TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    id       INTEGER PRIMARY KEY,
    run      TEXT NOT NULL,
    stage    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    first    INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    replays  INTEGER NOT NULL DEFAULT 0,
    created  REAL NOT NULL,
    payload  BLOB NOT NULL
);
"""

# primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF)
SQLITE_PERM = 3
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26
UNAVAILABLE_CODES = {SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL,
                     SQLITE_CANTOPEN}
CORRUPT_CODES = {SQLITE_CORRUPT, SQLITE_NOTADB}


class BufferCorrupt(Exception):
    """The buffer file failed its check; it was moved aside to `kept_at` (never emptied)."""

    def __init__(self, message: str, kept_at: Path | None = None) -> None:
        super().__init__(message)
        self.kept_at = kept_at


class BufferOpenError(Exception):
    """The buffer file cannot be opened (locked by another process, unwritable dir, newer format)."""


def primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_unavailable(exc: BaseException) -> bool:
    """Disk full, read-only, I/O error, cannot open: retry later, refuse new items meanwhile."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, sqlite3.Error) and primary_code(exc) in UNAVAILABLE_CODES


def is_corrupt(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and primary_code(exc) in CORRUPT_CODES


def buffer_path(state_dir: Path, pipeline: str) -> Path:
    return Path(state_dir) / "buffers" / f"{pipeline}.sqlite3"


def make_private(path: Path) -> None:
    """The directory 0700, the file (created if missing) and its WAL 0600, also when they
    existed looser (by hand, another umask): the items are the pipeline's data, like its dead
    letters. SQLite gives a new WAL the mode of its database file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.parent.stat()
    if status.st_mode & 0o077 and status.st_uid == os.geteuid():
        with contextlib.suppress(OSError):  # (a read-only file system: the open below says so)
            os.chmod(path.parent, 0o700)  # mkdir's mode is reduced by the umask
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    wal = path.with_name(path.name + "-wal")
    with contextlib.suppress(FileNotFoundError):
        if wal.stat().st_mode & 0o077:
            os.chmod(wal, 0o600)


def connect(path: Path, sync: str) -> sqlite3.Connection:
    """Open (creating if needed, private) with the pragmas the buffer relies on; no check."""
    make_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        # EXCLUSIVE before the first WAL access: the WAL index lives in heap memory (no -shm)
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        if _is_new(conn):
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BufferOpenError(f"{path}: cannot switch to WAL mode (journal_mode is {mode!r})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if sync == 'full' else 'NORMAL'}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn
    except BaseException:
        conn.close()
        raise


def _is_new(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def open_checked(path: Path, pipeline: str, sync: str) -> sqlite3.Connection:
    """Open, check (`PRAGMA quick_check`) and create the schema.

    A file that is not a database or fails the check is renamed `<file>.corrupt-<timestamp>`
    (with its `-wal`) and BufferCorrupt raised; a file locked by another process, an unwritable
    directory or a newer format raise BufferOpenError. Nothing is ever emptied.
    """
    try:
        conn = connect(path, sync)
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            raise _quarantine(path, f"not a buffer file: {exc}") from exc
        raise BufferOpenError(_open_text(path, exc)) from exc
    except OSError as exc:
        raise BufferOpenError(f"{path}: cannot open or create the buffer file: {exc}") from exc
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise _Corrupt("; ".join(str(p) for p in problems))
        conn.executescript(SCHEMA)
        _check_meta(conn, path, pipeline)
        # a first write takes the EXCLUSIVE lock now, held until close: no other process shares it
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('opened', ?)", (time.time(),))
        return conn
    except (_Corrupt, sqlite3.DatabaseError) as exc:
        conn.close()
        if isinstance(exc, _Corrupt) or is_corrupt(exc):
            raise _quarantine(path, f"failed its integrity check: {exc}") from exc
        raise BufferOpenError(_open_text(path, exc)) from exc
    except BaseException:
        conn.close()
        raise


class _Corrupt(Exception):
    pass


def _open_text(path: Path, exc: BaseException) -> str:
    if primary_code(exc) in (SQLITE_BUSY, SQLITE_LOCKED):
        return f"{path}: the buffer file is in use by another process (another daemon on this state dir?)"
    return f"{path}: cannot open the buffer file: {exc}"


def _check_meta(conn: sqlite3.Connection, path: Path, pipeline: str) -> None:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if not meta:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("format", FORMAT), ("pipeline", pipeline), ("created", time.time()), ("next_run", 1)],
        )
        return
    found = meta.get("format")
    if not isinstance(found, int) or found > FORMAT:
        raise BufferOpenError(f"{path}: buffer format {found!r} is not one this daemon reads (format {FORMAT})")


def _quarantine(path: Path, what: str) -> BufferCorrupt:
    """Move the file (and its WAL) aside; the BufferCorrupt to raise."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, kept)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, kept.with_name(kept.name + suffix))
    except OSError as exc:
        return BufferCorrupt(f"{path}: {what}; it could not be moved aside ({exc}): move it away by hand")
    return BufferCorrupt(f"{path}: {what}; kept as {kept.name} (nothing was replayed from it)", kept)


def remove_files(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).unlink()


def file_bytes(path: Path) -> int:
    total = 0
    for name in (path.name, path.name + "-wal"):
        with contextlib.suppress(OSError):
            total += (path.parent / name).stat().st_size
    return total
