"""Where built-in stages may read and write: regular files under the daemon's roots, nothing else.

The daemon exports its roots before any pipeline starts (worker processes inherit them):
`PIPELINED_READ_PATHS` and `PIPELINED_WRITE_PATHS`, absolute directories joined with
`os.pathsep` (`[daemon] read_paths` / `write_paths` plus the defaults: the state dir for both,
the conf dir for reading). Without them (a stage called outside the daemon) the state dir is
the only root. Every refusal is a `PathRefused` naming the stage, the argument, the path and
the rule it broke:

- `..` (or an absolute path) leaving every root;
- a symlink (the file or a directory on the way) whose target is outside every root;
- anything but a regular file: a device such as `/dev/zero`, a FIFO, a socket, a directory.

Files are opened, then checked again through the open descriptor (`fstat`, and the path the
kernel reports for it), so what is read or written is what was checked. A file to write is
reached from its root one directory at a time (`openat` with O_NOFOLLOW), so a directory
swapped for a symlink after the check never makes it create anything outside the roots. A FIFO is opened
non-blocking, so it is refused instead of hanging the stage.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pipelined.stages._support import state_dir

READ_PATHS_ENV = "PIPELINED_READ_PATHS"
WRITE_PATHS_ENV = "PIPELINED_WRITE_PATHS"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class PathRefused(PermissionError):
    """A built-in stage was given a path outside its roots, or something that is not a regular file."""


def roots(for_writing: bool) -> list[Path]:
    """The allowed roots (absolute, normalized) for reading or for writing."""
    exported = os.environ.get(WRITE_PATHS_ENV if for_writing else READ_PATHS_ENV, "")
    chosen = [entry for entry in exported.split(os.pathsep) if entry] or [str(state_dir())]
    return [Path(os.path.normpath(os.path.abspath(entry))) for entry in chosen]


def _describe_roots(for_writing: bool) -> str:
    key = "write_paths" if for_writing else "read_paths"
    return f"[daemon] {key}: {', '.join(str(r) for r in roots(for_writing))}"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def confine(path: Path, key: str, place: str, *, for_writing: bool) -> Path:
    """`path` (absolute) normalized, once it is inside a root both as written and after symlinks.

    Raises PathRefused naming the rule; a path that does not exist yet is checked up to its
    deepest existing directory.
    """
    action = "writing" if for_writing else "reading"
    normal = Path(os.path.normpath(path))
    allowed = roots(for_writing)
    real_roots = [Path(os.path.realpath(root)) for root in allowed]
    if not any(_inside(normal, root) for root in [*allowed, *real_roots]):
        raise PathRefused(
            f"{place}: {key}: {path} is outside the roots allowed for {action} ({_describe_roots(for_writing)});"
            " built-in stages only use files under them"
        )
    real = Path(os.path.realpath(normal))
    if not any(_inside(real, root) for root in real_roots):
        raise PathRefused(
            f"{place}: {key}: {path} leads through a symlink to {real}, outside the roots allowed for"
            f" {action} ({_describe_roots(for_writing)})"
        )
    return normal


def check_opened(fd: int, path: Path, key: str, place: str, *, for_writing: bool) -> None:
    """After opening: a regular file, really inside a root (raises PathRefused otherwise)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise PathRefused(f"{place}: {key}: {path} is {_kind(mode)}; built-in stages only use regular files")
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return  # no /proc: the realpath check before opening stands
    if opened.is_absolute() and not any(
        _inside(opened, Path(os.path.realpath(root))) for root in roots(for_writing)
    ):
        raise PathRefused(
            f"{place}: {key}: {path} opened {opened}, outside the roots allowed for"
            f" {'writing' if for_writing else 'reading'} ({_describe_roots(for_writing)})"
        )


def refuse_non_regular(path: Path, key: str, place: str) -> None:
    """Before opening for reading: refuse a device, FIFO or socket by what `stat` says (no open)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the open reports it
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise PathRefused(f"{place}: {key}: {path} is {_kind(mode)}; built-in stages only use regular files")


def open_for_reading(path: Path, key: str, place: str) -> int:
    """A descriptor of the regular file `path` inside the read roots (PathRefused / OSError)."""
    confined = confine(path, key, place, for_writing=False)
    refuse_non_regular(confined, key, place)
    fd = os.open(confined, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        check_opened(fd, confined, key, place, for_writing=False)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_writing(path: Path, key: str, place: str, *, truncate: bool = False) -> int:
    """An O_APPEND descriptor of the regular file `path` inside the write roots, created 0600
    (missing directories 0700; emptied with `truncate`); never follows a symlink at the file.

    After the check, the file is reached from its root one component at a time (`openat`
    style: each directory opened relative to the one before with O_NOFOLLOW, missing ones made
    there), so a directory swapped for a symlink meanwhile is refused, and nothing is ever
    created outside the roots."""
    confined = confine(path, key, place, for_writing=True)
    refuse_non_regular(confined, key, place)
    flags = (
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    )
    fd = _open_beneath_root(confined, flags, key, place)
    try:
        check_opened(fd, confined, key, place, for_writing=True)
        os.set_blocking(fd, True)
        if truncate:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_beneath_root(path: Path, flags: int, key: str, place: str) -> int:
    """Open `path` (confined, normalized) by walking from the write root that holds it."""
    real = Path(os.path.realpath(path))  # every symlink on the way resolved (all inside, checked)
    root = next((r for r in (Path(os.path.realpath(x)) for x in roots(True)) if _inside(real, r)), None)
    if root is None:  # a symlink put on the way since the check
        raise PathRefused(
            f"{place}: {key}: {path} leads through a symlink to {real}, outside the roots allowed for"
            f" writing ({_describe_roots(True)})"
        )
    parts = real.relative_to(root).parts
    if not parts:
        raise PathRefused(f"{place}: {key}: {path} is a directory; built-in stages only use regular files")
    make_private_dirs(root)  # a root that does not exist yet (configured, trusted): made as before
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = root
        for name in parts[:-1]:
            walked = walked / name
            child = _enter_directory(dir_fd, name, walked, key, place)
            os.close(dir_fd)
            dir_fd = child
        try:
            return os.open(parts[-1], flags, PRIVATE_FILE_MODE, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the file itself is a symlink
                raise PathRefused(
                    f"{place}: {key}: {path} is a symlink; built-in stages write only regular files"
                ) from None
            raise
    finally:
        os.close(dir_fd)


def _enter_directory(parent: int, name: str, shown: Path, key: str, place: str) -> int:
    """The directory `name` in `parent` (made 0700 if missing), never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    made = False
    while True:
        try:
            child = os.open(name, flags, dir_fd=parent)
            break
        except FileNotFoundError:
            if made:
                raise
            try:
                os.mkdir(name, PRIVATE_DIR_MODE, dir_fd=parent)
                made = True
            except FileExistsError:
                made = True  # made by someone else meanwhile: open it (once)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(parent, name):
                raise PathRefused(
                    f"{place}: {key}: {shown} is a symlink now (put there after the check); built-in"
                    " stages never write through one"
                ) from None
            raise  # a file in the way: the caller's "cannot open … Not a directory"
    if made:
        try:
            os.fchmod(child, PRIVATE_DIR_MODE)  # mkdir's mode is reduced by the umask; 0700 is wanted
        except BaseException:
            os.close(child)
            raise
    return child


def _is_symlink(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def make_private_dirs(directory: Path) -> None:
    """`mkdir -p` with mode 0700 for every directory it creates (whatever the umask)."""
    missing: list[Path] = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for entry in reversed(missing):
        try:
            entry.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(entry, PRIVATE_DIR_MODE)  # mkdir's mode is reduced by the umask; 0700 is wanted
