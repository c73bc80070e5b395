"""Files the daemon trusts must be writable by root or its own user only, as sshd's StrictModes
refuses such keys.

A pipeline file names any importable callable, so whoever can write it (or add a file to its
directory) runs code as the daemon's user; so does whoever can write a `python_path` directory
(a module of the imported name), the settings file (`conf_dir`, `python_path`...) or the state
dir (the disk buffer holds pickles, replayed at start). Such a path is refused when it is:
- owned by a user other than root and the daemon's own (its owner may chmod it at will);
- writable by others (`o+w`; a sticky directory like /tmp too: anyone may still add a file);
- writable by a group other than its owner's own private group (`g+w`: the Debian default of one
  group per user, with no other members, is accepted).

A pipeline file that is a symlink is checked where it links to as well, and so are the
directories above each of these up to / (`directory_above`: another owner, or write access for
others or a shared group without the sticky bit, would let that user move the whole tree away
and plant another). A refused pipeline file
is an error of that file: the daemon does not load it (a running version keeps running) and
`pipelined check` says why and how to fix it. The check runs before any of the file's code is
imported.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def trusted_owner() -> str:
    """Who may own what the daemon trusts: root, or the daemon's user ("root" when it is root)."""
    return user_name(os.geteuid()) if os.geteuid() != 0 else "root"


def writable_by_others(path: Path) -> str | None:
    """Who else may write `path` ("others", "group 'staff'", "user 'bob'" as its owner), or None;
    None too if it cannot be stat'ed."""
    try:
        status = path.stat()
    except OSError:
        return None
    return _who_else(status)


def _who_else(status: os.stat_result) -> str | None:
    if status.st_uid not in (0, os.geteuid()):
        return f"user {user_name(status.st_uid)!r}"
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


def directory_above(directory: Path) -> tuple[Path, str] | None:
    """The first directory above `directory` (where it really is, up to /) that another user
    could use to swap it for one of their own — (that directory, who) — or None. Another owner
    always counts; others or a shared group with write access count unless the directory is
    sticky (like /tmp: they may add entries there, not move what is not theirs)."""
    for above in Path(os.path.realpath(directory)).parents:
        try:
            status = above.stat()
        except OSError:
            continue
        who = _who_else(status)
        if who is None or (not who.startswith("user ") and status.st_mode & stat.S_ISVTX):
            continue
        return above, who
    return None


def refusal(target: Path, who: str, *, inline: bool = False) -> str:
    """`(<target>, mode 0777) is writable by others ...; make it ... (chmod go-w <target>)`, or the
    chown for an owner, for a path `writable_by_others` named `who` for; `inline` starts with
    `<target> (mode 0777)` instead."""
    try:
        mode = f"mode {stat.S_IMODE(target.stat().st_mode):04o}"
    except OSError:
        mode = "mode unknown"
    lead = f"{target} ({mode})" if inline else f"({target}, {mode})"
    if who.startswith("user "):
        return (
            f"{lead} is owned by {who}, who could then run any code as the daemon's user;"
            f" it must belong to root or the daemon's user (chown {trusted_owner()} {target})"
        )
    return (
        f"{lead} is writable by {who}, who could then run any code as the daemon's user;"
        f" make it writable by its owner only (chmod go-w {target})"
    )


def path_problem(path: Path) -> str | None:
    """Why `path` (a directory the daemon trusts) is refused, or None: `<path> (mode 0777) is
    writable by others, ...; make it ... (chmod go-w <path>)`, or the same of a directory above."""
    who = writable_by_others(path)
    if who is not None:
        return refusal(path, who, inline=True)
    above = directory_above(path)
    return None if above is None else f"{path} is in {refusal(*above, inline=True)}"


def code_dir_problems(directories: Sequence[Path]) -> list[str]:
    """Why each `python_path` directory, or a module in it (a top-level `.py` file or package
    directory), is refused: `python_path <dir> (mode 0777) is writable by others, ...`."""
    found = []
    for directory in directories:
        try:
            entries = sorted(e for e in directory.iterdir() if e.suffix == ".py" or e.is_dir())
        except OSError:
            entries = []
        for target in [directory, *entries]:
            who = writable_by_others(target)
            if who is not None:
                found.append(f"python_path {refusal(target, who, inline=True)}")
        above = directory_above(directory)
        if above is not None:
            found.append(f"python_path {directory} is in {refusal(*above, inline=True)}")
    return found


def declared_python_path(path: Path, data: bytes | None = None, *, resolve: bool = False) -> tuple[Path, ...]:
    """The `python_path` directories the pipeline file at `path` declares (relative to it), as
    written and normalized — or, with `resolve`, where they really are (symlinks resolved, as
    imported modules' files are); () when it declares none or cannot be read or parsed (loading
    reports that). `data`: the file's bytes when the caller has read them already."""
    try:
        data = path.read_bytes() if data is None else data
    except OSError:
        return ()
    if b"python_path" not in data:
        return ()  # most files: no TOML parse needed to know it
    raw = parsed_toml(data).get("python_path", [])
    if not isinstance(raw, list):
        return ()
    entries = [entry for entry in raw if isinstance(entry, str)]
    if resolve:
        return tuple((path.parent / entry).resolve() for entry in entries)
    base = path.parent.absolute()
    return tuple(Path(os.path.normpath(base / entry)) for entry in entries)


@functools.lru_cache(maxsize=4096)
def parsed_toml(data: bytes) -> dict[str, Any]:
    """A pipeline file's TOML ({} when invalid), parsed once per content: every re-scan asks
    each file for its `python_path`. Callers only read it."""
    try:
        return tomllib.loads(data.decode("utf-8", errors="replace"))
    except (tomllib.TOMLDecodeError, RecursionError):
        return {}


def permission_problem(path: Path) -> Problem | None:
    """The Problem of a pipeline file that others may write (the file or its directory, where a
    symlink leads, its `python_path` directories and the modules in them), or None."""
    checks = [(path.parent, "its directory"), (path, "the file")]
    if path.is_symlink():
        real = path.resolve()
        checks += [(real.parent, "the directory it links into"), (real, "the file it links to")]
    for target, what in checks:
        who = writable_by_others(target)
        if who is not None:
            return Problem(str(path), path.stem, f"refused: {what} {refusal(target, who)}")
    above = directory_above(Path(os.path.realpath(path)).parent)
    if above is not None:
        return Problem(str(path), path.stem, f"refused: a directory above it {refusal(*above)}")
    code = code_dir_problems(declared_python_path(path))
    return Problem(str(path), path.stem, f"refused: {code[0]}") if code else None
