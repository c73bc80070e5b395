"""`tail_file`: follow a growing file like `tail -F`, across rotation, truncation and restarts.

Delivery (at-least-once): the offset of a line is saved only once that line and every line
before it have *finished* — consumed, filtered or dead-lettered, with everything derived from
them (memory buffer) — or are stored in the disk buffer (`buffer = "disk"`): the engine calls
back through `ctx.on_delivered`. So a drain, reload or restart neither repeats nor skips lines,
and after a `kill -9` the lines that had not finished are read again instead of being lost.
Without an engine context that can tell (a fake ctx, a worker process), the offset is saved
when the generator resumes after the line (the engine took it).
"""

from __future__ import annotations

import codecs
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pipelined.stages._lines import DEFAULT_MAX_LINE, CutLines
from pipelined.stages._paths import PathRefused, confine, open_for_reading
from pipelined.stages._support import (
    StageContext,
    is_stopping,
    logger_for,
    resolve_path,
    to_seconds,
    to_size,
    wait_or_stop,
    where,
)
from pipelined.stages.tail_offsets import OffsetBusy, OffsetStore, Position

_READ_CHUNK = 1 << 16
_MAX_READ_PER_POLL = 1 << 20
_STARTS = ("end", "beginning")

Line = tuple[str, int, int]  # text, inode of its file, offset just past its newline


class _OpenFile:
    """One open file being read line by line; `offset` is where the unread partial line starts.

    A line longer than `limit` bytes is cut: its first `limit` bytes are yielded as soon as they
    are there, the rest up to its newline is skipped (`skipping`), and `cut` counts it.
    """

    def __init__(self, path: Path, offset: int, encoding: str, place: str, cut: CutLines) -> None:
        self.handle: BinaryIO = os.fdopen(open_for_reading(path, "path", place), "rb", buffering=0)
        self.inode = os.fstat(self.handle.fileno()).st_ino
        self.encoding = encoding
        self.cut = cut
        self.restart_at(offset)

    @property
    def position(self) -> int:
        return self.offset + len(self.partial)

    def size(self) -> int:
        return os.fstat(self.handle.fileno()).st_size

    def restart_at(self, offset: int) -> None:
        self.offset = offset
        self.partial = b""
        self.skipping = False
        self.handle.seek(offset)

    def read_lines(self, *, final: bool = False) -> list[Line]:
        """The complete lines available now; with `final`, also an unterminated last line."""
        chunks = [self.partial]
        total = 0
        while total < _MAX_READ_PER_POLL:
            chunk = self.handle.read(_READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        data = b"".join(chunks)
        limit = self.cut.limit
        lines: list[Line] = []
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            end = self.offset + newline + 1
            if self.skipping:  # the rest of a line already yielded cut
                self.skipping = False
            else:
                raw = data[start:newline]
                if len(raw) > limit:
                    raw = raw[:limit]
                    self.cut.cut(f"the line at byte {self.offset + start}")
                lines.append(self._line(raw, end))
            start = newline + 1
        rest = data[start:]
        if self.skipping:
            start, rest = len(data), b""
        elif len(rest) > limit:  # no newline yet, already too long: yield it cut, skip the rest
            self.cut.cut(f"the line at byte {self.offset + start}")
            lines.append(self._line(rest[:limit], self.offset + len(data)))
            start, rest, self.skipping = len(data), b"", True
        self.partial = rest
        if final and self.partial:
            lines.append(self._line(self.partial, self.offset + len(data)))
            start, self.partial = len(data), b""
        self.offset += start
        return lines

    def _line(self, raw: bytes, end: int) -> Line:
        return raw.removesuffix(b"\r").decode(self.encoding, errors="replace"), self.inode, end

    def close(self) -> None:
        self.handle.close()


class _Follower:
    """Follows `path`: the file now at that path, or first the rotated file a saved offset names."""

    def __init__(self, path: Path, encoding: str, place: str, cut: CutLines) -> None:
        self.path = path
        self.encoding = encoding
        self.place = place
        self.cut = cut
        self.current: _OpenFile | None = None
        self.finishing_rotated = False

    def resume(self, saved: Position | None, start: str) -> None:
        stat = _stat(self.path)
        if saved is None:
            if stat is not None:
                self._open(self.path, 0 if start == "beginning" else stat.st_size)
            return  # a file that appears later is read from its beginning
        if stat is not None and stat.st_ino == saved.inode:
            self._open(self.path, saved.offset if stat.st_size >= saved.offset else 0)
            return
        rotated = _find_by_inode(self.path, saved.inode)
        if rotated is not None:
            self._open(rotated, saved.offset if os.stat(rotated).st_size >= saved.offset else 0)
            self.finishing_rotated = True
        elif stat is not None:
            self._open(self.path, 0)  # the saved file is gone: all of the current one is new

    def poll(self) -> list[Line]:
        """Lines available now; handles the file appearing, rotation and truncation."""
        if self.current is None and (_stat(self.path) is None or not self._open(self.path, 0)):
            return []
        assert self.current is not None
        lines = self.current.read_lines()
        if lines:
            return lines
        if self.finishing_rotated:
            return self._switch_to_path()
        stat = _stat(self.path)
        if stat is None:
            return []  # moved away and not yet recreated: the writer may still append to ours
        if stat.st_ino != self.current.inode:
            return self._switch_to_path()
        if self.current.size() < self.current.position:
            self.current.restart_at(0)  # truncated in place
            return self.current.read_lines()
        return []

    def _switch_to_path(self) -> list[Line]:
        assert self.current is not None
        rest = self.current.read_lines(final=True)
        self.current.close()
        self.current = None
        self.finishing_rotated = False
        return rest

    def _open(self, path: Path, offset: int) -> bool:
        """Open `path` at `offset`; False when it vanished in between (it is waited for)."""
        try:
            self.current = _OpenFile(path, offset, self.encoding, self.place, self.cut)
        except FileNotFoundError:
            return False
        except PathRefused:
            raise
        except OSError as exc:
            raise OSError(f"{self.place}: path: cannot read {path}: {exc.strerror}") from None
        return True

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _find_by_inode(path: Path, inode: int) -> Path | None:
    """A rotated copy of `path` (same directory, name starting with its name) with that inode."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return None
    for entry in entries:
        if entry.name.startswith(path.name) and entry.name != path.name:
            try:
                if entry.inode() == inode and entry.is_file(follow_symlinks=False):
                    return Path(entry.path)
            except OSError:
                continue
    return None


def tail_file(
    path: str,
    start: str = "end",
    poll_interval: float | str = 0.2,
    encoding: str = "utf-8",
    max_line: int | str = DEFAULT_MAX_LINE,
    ctx: StageContext | None = None,
) -> Iterator[str]:
    """Yield lines appended to `path` (without their line ending) until the pipeline drains.

    The first time (no saved offset) it starts at the file's end, or at its beginning with
    `start = "beginning"`. Offsets are kept per (pipeline, stage) in the state dir; without a
    `ctx` nothing is saved. The file must be a regular file under the read roots (`[daemon]
    read_paths`); lines longer than `max_line` bytes are cut and counted.
    """
    place = where(ctx, "tail_file")
    file_path = confine(resolve_path(path, "path", place), "path", place, for_writing=False)
    pause = to_seconds(poll_interval, "poll_interval", place)
    limit = to_size(max_line, "max_line", place)
    if start not in _STARTS:
        raise ValueError(f"{place}: start: expected one of {', '.join(_STARTS)}, got {start!r}")
    try:
        store = OffsetStore.for_stage(ctx.pipeline, ctx.stage) if ctx is not None else None
    except OffsetBusy as exc:
        raise RuntimeError(f"{place}: already running: {exc}; give this stage threads = 1") from None
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"{place}: encoding: unknown encoding {encoding!r}") from None
    follower = _Follower(
        file_path, encoding, place, CutLines(logger_for(ctx, "tail_file"), place, path, limit)
    )
    try:
        saved = store.load() if store is not None else None
        follower.resume(saved if saved is not None and saved.path == str(path) else None, start)
    except BaseException:
        follower.close()
        if store is not None:
            store.close()
        raise
    # Positioned now (not at the first next()), so "end" means the end when the run started.
    return _follow(follower, store, str(path), pause, ctx)


def _follow(
    follower: _Follower, store: OffsetStore | None, path: str, pause: float, ctx: StageContext | None
) -> Iterator[str]:
    try:
        while not is_stopping(ctx):
            lines = follower.poll()
            if not lines:
                if wait_or_stop(ctx, pause):
                    return
                continue
            for text, inode, end in lines:
                try:
                    yield text
                finally:  # resumed (the line was taken) or closed at this yield (drain, reload)
                    if store is not None:
                        _when_delivered(ctx, functools.partial(store.save, Position(inode, end, path)))
    finally:
        follower.close()
        follower.cut.report()
        if store is not None:
            _when_delivered(ctx, store.close)  # after the last save


def _when_delivered(ctx: StageContext | None, callback: Callable[[], None]) -> None:
    """Run `callback` once every line yielded so far has finished (or is in the disk buffer)."""
    on_delivered = getattr(ctx, "on_delivered", None)
    if on_delivered is None:
        callback()
    else:
        on_delivered(callback)
