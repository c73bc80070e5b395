"""Dead letters of one pipeline: newest first in memory, one JSON line each on disk.

File: `<state_dir>/dead-letters/<pipeline>.jsonl`, read back when the store is created (so the
API shows dead letters from before a restart), rotated at 64 MiB keeping one old file
(`<pipeline>.jsonl.1`). Fields: id, run, stage, at, attempts, error, item (as JSON, or its
`repr` when it is not JSON-serialisable).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipelined.engine.runs import RUN_PREFIX, utc_now_iso

log = logging.getLogger("pipelined.engine")

ROTATE_BYTES = 64 * 1024 * 1024
KEPT_IN_MEMORY = 10_000


def item_as_json(item: Any) -> Any:
    """The item as a JSON value, or its repr when orjson cannot encode it."""
    try:
        return orjson.loads(orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        try:
            return repr(item)
        except Exception as exc:  # a broken __repr__ must not lose the letter
            return f"<unrepresentable {type(item).__name__}: {exc}>"


class DeadLetterStore:
    def __init__(
        self,
        pipeline: str,
        state_dir: Path | None,
        *,
        rotate_bytes: int = ROTATE_BYTES,
        keep: int = KEPT_IN_MEMORY,
    ) -> None:
        self.pipeline = pipeline
        self.rotate_bytes = rotate_bytes
        self.path = None if state_dir is None else Path(state_dir) / "dead-letters" / f"{pipeline}.jsonl"
        self._letters: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._prefix = uuid.uuid4().hex[:8]
        self._seq = itertools.count(1)
        self._read_back()

    def _read_back(self) -> None:
        if self.path is None:
            return
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot read dead letters from %s: %s", path, exc, extra={"pipeline": self.pipeline})
                continue
            for line in lines[-(self._letters.maxlen or 0):]:
                try:
                    self._letters.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.warning("skipping a corrupt line in %s", path, extra={"pipeline": self.pipeline})

    def add(self, run: str, stage: str, attempts: int, error: str, item: Any) -> dict[str, Any]:
        return self.add_many(run, stage, attempts, error, [item])[0]

    def add_many(
        self, run: str, stage: str, attempts: int, error: str, items: Iterable[Any]
    ) -> list[dict[str, Any]]:
        """Record one dead letter per item (same run, stage, attempts and error)."""
        at = utc_now_iso()
        letters = [
            {
                "id": "",  # numbered under the lock below: ids follow the order letters are kept in
                "run": run,
                "stage": stage,
                "at": at,
                "attempts": attempts,
                "error": error,
                "item": item_as_json(item),
            }
            for item in items
        ]
        with self._lock:
            for letter in letters:
                letter["id"] = f"dl-{self._prefix}-{next(self._seq):06d}"
            data = b"".join(orjson.dumps(letter) + b"\n" for letter in letters)
            self._letters.extend(letters)
            self._write(data)
        return letters

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, at most `limit`."""
        with self._lock:
            return list(itertools.islice(reversed(self._letters), max(0, limit)))

    def highest_run_number(self) -> int:
        """The largest N of the run ids `r-N` the stored letters name (0 if none)."""
        highest = 0
        with self._lock:
            for letter in self._letters:
                run = letter.get("run") if isinstance(letter, dict) else None
                if isinstance(run, str) and run.startswith(RUN_PREFIX) and run[len(RUN_PREFIX):].isdigit():
                    highest = max(highest, int(run[len(RUN_PREFIX):]))
        return highest

    def __len__(self) -> int:
        return len(self._letters)

    def _write(self, data: bytes) -> None:
        if self.path is None or not data:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across calls
            self._file.write(data)
            self._file.flush()
            if self._file.tell() >= self.rotate_bytes:
                self._rotate()
        except OSError as exc:
            log.error("cannot write dead letters to %s: %s", self.path, exc, extra={"pipeline": self.pipeline})

    def _rotate(self) -> None:
        assert self.path is not None and self._file is not None
        self._file.close()
        self._file = None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
