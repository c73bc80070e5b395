"""Helpers shared by the built-in stages: the `ctx` protocol, waiting that notices a drain,
argument checks with clear messages, durations, and where relative paths resolve.

Relative paths given to built-in stages resolve against the daemon's state dir, which the daemon
exports as `PIPELINED_STATE_DIR`; without it, systemd's `STATE_DIRECTORY` (set for a unit with
`StateDirectory=`), else `.state` relative to the working directory. Under systemd the working
directory is `/` and the state dir is the one place the sandboxed unit may write.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from pipelined.config.durations import parse_duration, parse_size

STATE_DIR_ENV = "PIPELINED_STATE_DIR"
SYSTEMD_STATE_DIR_ENV = "STATE_DIRECTORY"  # set by systemd for StateDirectory=
DEFAULT_STATE_DIR = ".state"
_WAIT_SLICE_S = 0.05  # how often a waiting stage looks at ctx.stopping


class StageContext(Protocol):
    """What the engine passes to a stage callable's `ctx` parameter (spec: config.md, Callables)."""

    @property
    def pipeline(self) -> str: ...

    @property
    def stage(self) -> str: ...

    @property
    def run(self) -> str | None: ...

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[Any]: ...

    @property
    def stopping(self) -> bool: ...

    def emit(self, item: Any) -> None: ...

    def emit_to(self, stage: str, item: Any) -> None: ...


def where(ctx: StageContext | None, function: str) -> str:
    """`pipeline/stage` for error messages, or the built-in's name when called without a ctx."""
    if ctx is None:
        return function
    return f"{ctx.pipeline}/{ctx.stage} ({function})"


def is_stopping(ctx: StageContext | None) -> bool:
    return bool(ctx is not None and ctx.stopping)


def wait_or_stop(ctx: StageContext | None, seconds: float) -> bool:
    """Sleep up to `seconds`; return True (early) as soon as the pipeline is stopping."""
    if ctx is None:
        time.sleep(max(seconds, 0.0))
        return False
    deadline = time.monotonic() + seconds
    while not ctx.stopping:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, _WAIT_SLICE_S))
    return True


def logger_for(ctx: StageContext | None, name: str) -> logging.Logger | logging.LoggerAdapter[Any]:
    return ctx.logger if ctx is not None else logging.getLogger(f"pipelined.stages.{name}")


def state_dir() -> Path:
    """`PIPELINED_STATE_DIR`; else systemd's `STATE_DIRECTORY` (its first entry); else `.state`."""
    exported = os.environ.get(STATE_DIR_ENV)
    if exported:
        return Path(exported)
    systemd_dirs = os.environ.get(SYSTEMD_STATE_DIR_ENV, "")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    return Path(DEFAULT_STATE_DIR)


def resolve_path(path: str | os.PathLike[str], key: str, place: str) -> Path:
    """A path argument, absolute: relative ones resolve against the state dir (`~` is not expanded).

    Where a stage may then read or write is checked by `pipelined.stages._paths`.
    """
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise TypeError(f"{place}: {key}: expected a non-empty path string, got {path!r}")
    resolved = Path(path)
    return Path(os.path.abspath(resolved if resolved.is_absolute() else state_dir() / resolved))


def to_size(value: object, key: str, place: str) -> int:
    """A size argument: a number of bytes (>= 1) or a string like "64KiB", "1MiB"."""
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{place}: {key}: {exc}") from None
    if size < 1:
        raise ValueError(f"{place}: {key}: must be at least 1 byte, got {value!r}")
    return size


def to_seconds(value: object, key: str, place: str) -> float:
    """A duration argument: a number of seconds or a string like "250ms", "5s", "2m", "1h"."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{place}: {key}: {exc}") from None


def require_int(value: object, key: str, place: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{place}: {key}: expected an integer, got {value!r}")
    return value


def require_bool(value: object, key: str, place: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{place}: {key}: expected true or false, got {value!r}")
    return value
