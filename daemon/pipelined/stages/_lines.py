"""Lines longer than `max_line` are cut: the stage keeps their first `max_line` bytes (characters
for `read_lines`), skips the rest up to the line's end, and counts them.

The count goes to the stage's log: a warning at the 1st, 10th, 100th, ... cut line (so a file of
huge lines cannot flood the log) and, when the stage ends, the total.
"""

from __future__ import annotations

import logging
from typing import Any

DEFAULT_MAX_LINE = 1024 * 1024  # 1 MiB


class CutLines:
    """Counts the lines one stage run cut at `limit` and says so in its log."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any], place: str, path: object,
                 limit: int) -> None:  # fmt: skip
        self.logger = logger
        self.place = place
        self.path = path
        self.limit = limit
        self.count = 0

    def cut(self, where: str) -> None:
        """One more line was cut; `where` says which (e.g. "line 12", "at byte 4096")."""
        self.count += 1
        if _is_power_of_ten(self.count):
            self.logger.warning(
                "%s: %s: %s is longer than max_line (%d): cut (%d line(s) cut so far)",
                self.place, self.path, where, self.limit, self.count,
            )  # fmt: skip

    def report(self) -> None:
        """At the end of the run: the total, when any line was cut."""
        if self.count:
            self.logger.warning(
                "%s: %s: %d line(s) longer than max_line (%d) were cut",
                self.place, self.path, self.count, self.limit,
            )  # fmt: skip


def _is_power_of_ten(number: int) -> bool:
    while number % 10 == 0:
        number //= 10
    return number == 1
