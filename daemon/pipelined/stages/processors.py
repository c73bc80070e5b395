"""Built-in processors and consumers that pass items along or write them out:
`log`, `sleep` (processors) and `write_jsonl` (a consumer)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import orjson

from pipelined.stages._paths import PathRefused, open_for_writing
from pipelined.stages._support import (
    StageContext,
    logger_for,
    require_bool,
    require_int,
    resolve_path,
    to_seconds,
    where,
)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def to_json_bytes(item: Any) -> bytes:
    """`item` as one line of JSON; what JSON cannot hold is written as its `repr` string, and so
    is the whole item when orjson gives up on it (nested deeper than its 255 levels)."""
    try:
        return orjson.dumps(item, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return orjson.dumps(safe_repr(item))


def safe_repr(item: Any) -> str:
    """`repr(item)`, or a placeholder naming its type when repr itself fails (too deep, a broken
    `__repr__`)."""
    try:
        return repr(item)
    except Exception as exc:  # noqa: BLE001 - RecursionError, or whatever a user's __repr__ raises
        return f"<unrepresentable {type(item).__name__}: {type(exc).__name__}: {exc}>"


def log(
    item: Any,
    level: str = "info",
    prefix: str = "",
    max_chars: int = 1000,
    ctx: StageContext | None = None,
) -> Any:
    """Log the item (as JSON, cut at `max_chars`) through the stage's logger and return it."""
    place = where(ctx, "log")
    number = _LEVELS.get(level) if isinstance(level, str) else None
    if number is None:
        raise ValueError(f"{place}: level: expected one of {', '.join(_LEVELS)}, got {level!r}")
    limit = require_int(max_chars, "max_chars", place)
    logger = logger_for(ctx, "log")
    if logger.isEnabledFor(number):
        text = to_json_bytes(item).decode("utf-8")
        if limit is not None and len(text) > limit:
            text = text[:limit] + f"... ({len(text)} chars)"
        logger.log(number, "%s%s", prefix, text)
    return item


def sleep(item: Any, seconds: float | str = 1.0, ctx: StageContext | None = None) -> Any:
    """Wait `seconds` (a number or a duration string), then return the item unchanged."""
    time.sleep(to_seconds(seconds, "seconds", where(ctx, "sleep")))
    return item


class JsonlWriter:
    """Consumer: append each item as one line of JSON to `path` (`pipelined.stages:write_jsonl`).

    A relative `path` resolves against the state dir and must lie under the write roots
    (`[daemon] write_paths`); missing directories are created (0700), the file 0600. Each
    worker opens the file once (O_APPEND) and writes every line with one `write`, so several
    threads or processes can share a file without interleaving lines. `append = false` empties
    the file when the worker starts; `fsync = true` syncs after every line. A path outside the
    write roots does not stop the pipeline from starting: each attempt fails with `PathRefused`
    (naming the path and the rule), so the items are retried and dead-lettered, not lost.
    """

    def __init__(self, path: str, append: bool = True, fsync: bool = False) -> None:
        place = "write_jsonl"
        self.path = resolve_path(path, "path", place)
        self.append = require_bool(append, "append", place)
        self.fsync = require_bool(fsync, "fsync", place)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with contextlib.suppress(PathRefused):  # every attempt reports it: it fails the attempt
            self._open()

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = open_for_writing(self.path, "path", "write_jsonl", truncate=not self.append)
                except PathRefused:
                    raise
                except OSError as exc:
                    raise OSError(
                        f"write_jsonl: path: cannot open {self.path} for writing: {exc.strerror}"
                    ) from None
            return self._fd

    def __call__(self, item: Any) -> None:
        fd = self._fd if self._fd is not None else self._open()
        line = to_json_bytes(item) + b"\n"
        written = os.write(fd, line)
        if written != len(line):  # a regular file writes all of it unless the disk is full
            raise OSError(f"write_jsonl: short write to {self.path}: {written} of {len(line)} bytes")
        if self.fsync:
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


write_jsonl = JsonlWriter
