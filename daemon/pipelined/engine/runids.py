"""Run numbers that are never handed out twice for a pipeline, across restarts and crashes.

The state dir keeps a high-water mark per pipeline, `<state_dir>/runs/<pipeline>.next`: a
number no run id has reached. Numbers are reserved ahead of use, `BLOCK` at a time — the new
mark is written (temp file, fsync, rename) *before* any number below it is handed out — so after
a `kill -9`, an OOM kill or a power loss the next process starts at the mark and skips at most
one block. Without a state dir (tests, tools) numbers only go up within the process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("pipelined.engine")

BLOCK = 1000


class RunNumbers:
    """Not thread-safe: the RunTracker calls `take` under its lock."""

    def __init__(self, pipeline: str, state_dir: Path | None, first: int = 1) -> None:
        self.pipeline = pipeline
        self.path = None if state_dir is None else Path(state_dir) / "runs" / f"{pipeline}.next"
        self._next = max(1, first, self._stored())
        self._reserved = self._next  # numbers below this are covered by the mark on disk
        self._warned = False

    def take(self) -> int:
        if self._next >= self._reserved:
            self._reserve(self._next + BLOCK)
        number = self._next
        self._next += 1
        return number

    def skip_to(self, number: int) -> None:
        """Numbers below `number` were used elsewhere (a disk buffer's stored runs)."""
        self._next = max(self._next, number)

    def _stored(self) -> int:
        if self.path is None:
            return 0
        try:
            return int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("cannot read the run id mark %s (%s): run ids start after the dead letters' highest",
                        self.path, exc, extra={"pipeline": self.pipeline})
            return 0

    def _reserve(self, upto: int) -> None:
        self._reserved = upto
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                fh.write(f"{upto}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            if not self._warned:  # ids stay unique in this process; only a crash could repeat some
                self._warned = True
                log.error("cannot write the run id mark %s: %s (after a crash, run ids could repeat)",
                          self.path, exc, extra={"pipeline": self.pipeline})
