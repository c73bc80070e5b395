"""Read the process tree from /proc (no psutil): children of a process, zombies among them."""

from __future__ import annotations

import os
from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (any state, zombies included); [] when `pid` is gone."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def descendant_pids(pid: int) -> list[int]:
    found: list[int] = []
    todo = child_pids(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(child_pids(child))
    return found


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat ('Z' for a zombie), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_running(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def own_children() -> list[int]:
    return child_pids(os.getpid())
