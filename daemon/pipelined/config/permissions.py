"""Pipeline files other users may write are refused, as sshd's StrictModes refuses such keys.

A pipeline file names any importable callable, so whoever can write it (or add a file to its
directory) runs code as the daemon's user. A pipeline file, or the directory it is in, that is
writable by others (`o+w`) or by a group other than its owner's own private group (`g+w`: the
Debian default of one group per user, with no other members, is accepted) is an error of that
file: the daemon does not load it (a running version keeps running) and `pipelined check` says
why and how to fix it. The check runs before any of the file's code is imported.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from pipelined.errors import Problem


def _group_is_owners_own(status: os.stat_result) -> bool:
    """True when the group is the owner's user-private group (same name, no other members)."""
    try:
        owner = pwd.getpwuid(status.st_uid)
        group = grp.getgrgid(status.st_gid)
    except KeyError:
        return False
    others = set(group.gr_mem) - {owner.pw_name}
    return owner.pw_gid == status.st_gid and group.gr_name == owner.pw_name and not others


def writable_by_others(path: Path) -> str | None:
    """Who else may write `path` ("group 'staff'", "others"), or None; None too if it cannot be stat'ed."""
    try:
        status = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(status.st_mode)
    if mode & stat.S_IWOTH:  # a sticky directory (like /tmp) too: anyone may still add a file
        return "others"
    if mode & stat.S_IWGRP and not _group_is_owners_own(status):
        try:
            name = grp.getgrgid(status.st_gid).gr_name
        except KeyError:
            name = str(status.st_gid)
        return f"group {name!r}"
    return None


def permission_problem(path: Path) -> Problem | None:
    """The Problem of a pipeline file that others may write (the file or its directory), or None."""
    for target, what in ((path.parent, "its directory"), (path, "the file")):
        who = writable_by_others(target)
        if who is None:
            continue
        mode = stat.S_IMODE(target.stat().st_mode)
        return Problem(
            str(path),
            path.stem,
            f"refused: {what} ({target}, mode {mode:04o}) is writable by {who}, who could then run"
            f" any code as the daemon's user; make it writable by its owner only (chmod go-w {target})",
        )
    return None
