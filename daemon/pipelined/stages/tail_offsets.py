"""Where `tail_file` remembers how far it got: `<state_dir>/tail/<pipeline>-<stage>.offset`.

The file holds one record, `<inode> <offset> <path>`, padded to a fixed width for the life of a
run so every update is one in-place `pwrite` (cheap enough to do after every line, and never
torn by a crash of the daemon process). The file is also locked (`flock`) while a run tails, so
two runs of one stage cannot share and corrupt one offset.
"""

from __future__ import annotations

import fcntl
import io
import os
from dataclasses import dataclass
from pathlib import Path

from pipelined.stages._paths import PRIVATE_FILE_MODE, make_private_dirs
from pipelined.stages._support import state_dir

_NUMBER_WIDTH = 20


@dataclass(frozen=True)
class Position:
    """A byte offset in the file whose inode is `inode`; `path` is the path being followed."""

    inode: int
    offset: int
    path: str


class OffsetBusy(RuntimeError):
    """Another run of the same stage is tailing with this offset file."""


class OffsetStore:
    """The offset file of one (pipeline, stage); open while a run tails."""

    def __init__(self, file: Path) -> None:
        self.file = file
        make_private_dirs(file.parent)
        # A FileIO (not a bare fd), so a run that is dropped unstarted still closes it when collected.
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        self._file = io.FileIO(fd, "r+b", closefd=True)
        self._fd = self._file.fileno()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise OffsetBusy(f"{file} is in use by another run of this stage") from None
        self._width = 0

    @classmethod
    def for_stage(cls, pipeline: str, stage: str) -> OffsetStore:
        return cls(state_dir() / "tail" / f"{pipeline}-{stage}.offset")

    def load(self) -> Position | None:
        """The saved position, or None when there is none or it cannot be read."""
        raw = os.pread(self._fd, 1 << 16, 0).decode("utf-8", errors="replace")
        first_line = raw.split("\n", 1)[0].strip()
        parts = first_line.split(None, 2)
        if len(parts) != 3:
            return None
        inode_text, offset_text, path = (part.strip() for part in parts)
        if not (inode_text.isdigit() and offset_text.isdigit()):
            return None
        return Position(int(inode_text), int(offset_text), path)

    def save(self, position: Position) -> None:
        record = f"{position.inode:>{_NUMBER_WIDTH}} {position.offset:>{_NUMBER_WIDTH}} {position.path}"
        data = record.encode("utf-8") + b"\n"
        os.pwrite(self._fd, data, 0)
        if len(data) != self._width:
            # Only the first save of a run: cut what an older, longer record left behind (after
            # the write, so a crash in between still leaves a readable first line).
            os.ftruncate(self._fd, len(data))
            self._width = len(data)

    def close(self) -> None:
        self._file.close()  # also releases the lock
