"""Built-in producers that need no state: `count` and `read_lines`."""

from __future__ import annotations

import codecs
import itertools
import os
from collections.abc import Iterator
from typing import TextIO

from pipelined.stages._lines import DEFAULT_MAX_LINE, CutLines
from pipelined.stages._paths import PathRefused, open_for_reading
from pipelined.stages._support import (
    StageContext,
    is_stopping,
    logger_for,
    require_bool,
    require_int,
    resolve_path,
    to_seconds,
    to_size,
    wait_or_stop,
    where,
)


def count(
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    interval: float | str | None = None,
    ctx: StageContext | None = None,
) -> Iterator[int]:
    """Yield `start`, `start + step`, ... up to (not including) `stop`; forever when `stop` is None.

    With `interval` (seconds or a duration string) it waits that long between items and ends
    promptly when the pipeline drains.
    """
    place = where(ctx, "count")
    first = require_int(start, "start", place)
    last = require_int(stop, "stop", place, allow_none=True)
    stride = require_int(step, "step", place)
    assert first is not None and stride is not None
    if stride == 0:
        raise ValueError(f"{place}: step: must not be 0")
    values = itertools.count(first, stride) if last is None else iter(range(first, last, stride))
    if interval is None:
        yield from values
        return
    pause = to_seconds(interval, "interval", place)
    for index, value in enumerate(values):
        if index and wait_or_stop(ctx, pause):
            return
        if is_stopping(ctx):
            return
        yield value


def read_lines(
    path: str,
    strip: bool = False,
    skip_empty: bool = False,
    encoding: str = "utf-8",
    max_line: int | str = DEFAULT_MAX_LINE,
    ctx: StageContext | None = None,
) -> Iterator[str]:
    """Yield the lines of a text file without their line ending.

    `strip` also removes surrounding whitespace; `skip_empty` drops lines that are empty (after
    stripping, when `strip` is set). Undecodable bytes become U+FFFD. A relative `path` resolves
    against the state dir; the file must be a regular file under the read roots
    (`[daemon] read_paths`). Lines longer than `max_line` characters are cut and counted.
    """
    place = where(ctx, "read_lines")
    file_path = resolve_path(path, "path", place)
    do_strip = require_bool(strip, "strip", place)
    do_skip = require_bool(skip_empty, "skip_empty", place)
    limit = to_size(max_line, "max_line", place)
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"{place}: encoding: unknown encoding {encoding!r}") from None
    try:
        fd = open_for_reading(file_path, "path", place)
    except FileNotFoundError:
        raise FileNotFoundError(f"{place}: path: no such file: {os.fspath(file_path)}") from None
    except PathRefused:
        raise
    except OSError as exc:
        raise OSError(f"{place}: path: cannot read {os.fspath(file_path)}: {exc.strerror}") from None
    cut = CutLines(logger_for(ctx, "read_lines"), place, os.fspath(file_path), limit)
    with open(fd, encoding=encoding, errors="replace", newline="") as handle:
        number = 0
        while raw := handle.readline(limit):
            number += 1
            if len(raw) == limit and not raw.endswith(("\n", "\r")) and _skip_rest_of_line(handle, limit):
                cut.cut(f"line {number}")
            line = raw.strip() if do_strip else raw.rstrip("\r\n")
            if do_skip and not line:
                continue
            yield line
    cut.report()


def _skip_rest_of_line(handle: TextIO, limit: int) -> bool:
    """Read past the end of the current line, `limit` characters at a time; True if any were left."""
    skipped = False
    while chunk := handle.readline(limit):
        skipped = True
        if chunk.endswith(("\n", "\r")):
            break
    return skipped
