"""The disk buffer's operations and how one group of them becomes one transaction.

Callers of the writer (buffer_writer.py) queue small tuples whose first field says what they
are; `apply_group` folds a whole group — appends, acks, run counters, run begins and ends — into
one `BEGIN IMMEDIATE … COMMIT`. An entry appended and acknowledged within the same group is
never written at all (docs/durability.md, "Group commit").
"""

from __future__ import annotations

import sqlite3
from typing import Any

# operations: a tuple whose first field says what it is
APPEND = "a"  # (APPEND, id, run, stage, kind, first, count, created, payload)
ACK = "k"  # (ACK, id, count)
COUNTERS = "c"  # (COUNTERS, run, finished, filtered, dead_lettered, last_error | None)
BEGIN_RUN = "r"  # (BEGIN_RUN, run, stage, kind, started_at, priority, parent, number)
SOURCE_DONE = "s"  # (SOURCE_DONE, run, error | None, cancelled)
END_RUN = "e"  # (END_RUN, run)
REPLAYED = "p"  # (REPLAYED, up_to_id): every entry up to that id is being replayed once more
BARRIER = "b"  # (BARRIER,): nothing; its Commit tells when everything before it is on disk


def apply_group(conn: sqlite3.Connection, ops: list[tuple[Any, ...]]) -> int:
    """One transaction for a group of operations; returns the change in pending items."""
    appends: dict[int, tuple[Any, ...]] = {}
    acks: list[tuple[int]] = []
    added = 0
    produced: dict[str, int] = {}
    counters: dict[str, list[Any]] = {}
    begins: list[tuple[Any, ...]] = []
    sources: list[tuple[Any, ...]] = []
    ends: list[tuple[str]] = []
    replayed = 0
    next_run = 0
    for op in ops:
        kind = op[0]
        if kind == APPEND:
            appends[op[1]] = op[1:]
            added += op[6]
            last = op[5] + op[6] - 1
            if produced.get(op[2], 0) < last:
                produced[op[2]] = last
        elif kind == ACK:
            added -= op[2]
            if appends.pop(op[1], None) is None:  # appended and finished in one group: never written
                acks.append((op[1],))
        elif kind == COUNTERS:
            c = counters.get(op[1])
            if c is None:
                counters[op[1]] = [op[2], op[3], op[4], op[5]]
            else:
                c[0] += op[2]
                c[1] += op[3]
                c[2] += op[4]
                c[3] = op[5] or c[3]
        elif kind == BEGIN_RUN:
            begins.append(op[1:7])
            next_run = max(next_run, op[7] + 1)
        elif kind == SOURCE_DONE:
            sources.append((op[2], int(op[3]), op[1]))
        elif kind == END_RUN:
            ends.append((op[1],))
        elif kind == REPLAYED:
            replayed = max(replayed, op[1])
    if not (begins or replayed or appends or produced or acks or counters or sources or ends):
        return added  # a barrier, or entries appended and finished within the group
    conn.execute("BEGIN IMMEDIATE")
    if begins:
        conn.executemany(
            "INSERT OR IGNORE INTO runs (run, stage, kind, started_at, priority, parent) VALUES (?, ?, ?, ?, ?, ?)",
            begins,
        )
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_run'", (next_run,))
    if replayed:
        conn.execute("UPDATE entries SET replays = replays + 1 WHERE id <= ?", (replayed,))
    if appends:
        conn.executemany(
            "INSERT OR REPLACE INTO entries (id, run, stage, kind, first, count, created, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            appends.values(),
        )
    if produced:
        conn.executemany("UPDATE runs SET produced = max(produced, ?) WHERE run = ?",
                         [(n, run) for run, n in produced.items()])
    if acks:
        conn.executemany("DELETE FROM entries WHERE id = ?", acks)
    if counters:
        conn.executemany(
            "UPDATE runs SET finished = finished + ?, filtered = filtered + ?, dead_lettered = dead_lettered + ?,"
            " last_error = coalesce(?, last_error) WHERE run = ?",
            [(*c, run) for run, c in counters.items()],
        )
    if sources:
        conn.executemany(
            "UPDATE runs SET source_done = 1, error = coalesce(?, error), cancelled = ? WHERE run = ?", sources
        )
    if ends:
        conn.executemany("DELETE FROM runs WHERE run = ?", ends)
    conn.execute("COMMIT")
    return added
