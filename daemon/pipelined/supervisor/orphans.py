"""Disk buffer files that no pipeline file owns (docs/operations.md, "Orphaned buffer files").

A pipeline's file removed while the daemon was stopped (or removed while its version still had
items stored at its drain deadline) leaves `<state_dir>/buffers/<name>.sqlite3` behind. Nothing
reads it until `<name>.toml` comes back; it is never deleted here. After the start and after every
re-scan that added or removed a pipeline the supervisor looks for such files, logs a warning for
each one that holds items (once, until what it holds changes); `Supervisor.orphaned_buffers`
keeps the last list.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pipelined.engine.buffer_file import buffer_path

log = logging.getLogger("pipelined.supervisor")

SUFFIX = ".sqlite3"


def find_orphans(state_dir: Path, pipelines: Collection[str]) -> list[dict[str, Any]]:
    """Every buffer file of a pipeline not in `pipelines` that holds items (or cannot be read):
    [{"pipeline", "file", "items", "error"}], by pipeline name."""
    folder = buffer_path(state_dir, "-").parent
    if not folder.is_dir():
        return []
    orphans = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        name = path.name[: -len(SUFFIX)]
        if name in pipelines or not path.is_file():
            continue
        items, error = _stored_items(path)
        if items or error is not None:
            orphans.append({"pipeline": name, "file": str(path), "items": items, "error": error})
    return orphans


def _stored_items(path: Path) -> tuple[int | None, str | None]:
    """How many items the file holds; (None, why) when it cannot be read (locked, corrupt)."""
    try:
        # read-write, never created: a WAL left by a kill is read through (in exclusive mode,
        # like the buffer itself: its WAL index lives in memory), as the pipeline's start would
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=0)
    except sqlite3.Error as exc:
        return None, f"{type(exc).__name__}: {exc}"
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM entries").fetchone()[0]), None
    except sqlite3.Error as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def warn_about(orphans: list[dict[str, Any]], before: list[dict[str, Any]], conf_dir: Path) -> None:
    """One warning per orphaned file that is new or whose contents changed since `before`."""
    for orphan in orphans:
        if orphan in before:
            continue
        name, file = orphan["pipeline"], orphan["file"]
        held = f"holds {orphan['items']} items" if orphan["error"] is None else f"cannot be read ({orphan['error']})"
        log.warning(
            "disk buffer file %s %s of pipeline %r, which has no pipeline file (%s): kept; its items "
            "resume when that file comes back (docs/operations.md, \"Orphaned buffer files\")",
            file, held, name, conf_dir / f"{name}.toml", extra={"pipeline": name},
        )  # fmt: skip
