"""How failed attempts reach the log without flooding it.

Every dead letter keeps its traceback (deadletters.py); the log gets, per pipeline version:
- the first failure of each kind — (stage, exception type) — with its traceback, once;
- then at most one summary line per stage every `SUMMARY_INTERVAL_S` (10 s): how many more
  attempts failed since the last line, how many of them were dead-lettered, and the last error
  with its run. A timer writes the summary, so it comes even when the failures stop; the drain
  of the version writes what is still pending.

200,000 failures thus write a few lines instead of a traceback each (journald's rate limit
would otherwise hide everything else).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pipelined.engine")

SUMMARY_INTERVAL_S = 10.0
MAX_TEXT = 2000  # characters of an error message in a log line (the dead letter has all of it)


@dataclass
class _Tally:
    failed: int = 0
    dead: int = 0
    last: str = ""
    last_run: str = ""
    since: float = 0.0
    timer: threading.Timer | None = None


def kind_of(text: str) -> str:
    """The exception type name of a failure text `TypeName: message`."""
    return text.split(":", 1)[0].strip() or "error"


def short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}… ({len(text)} chars)"


class FailureLog:
    def __init__(self, pipeline: str, interval: float = SUMMARY_INTERVAL_S) -> None:
        self.pipeline = pipeline
        self.interval = interval
        self._seen: set[tuple[str, str]] = set()
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()
        self._closed = False

    def failed(
        self,
        stage: str,
        run: str,
        text: str,
        trace: Callable[[], str | None],
        *,
        headline: str,
        gave_up: bool,
        kind: str | None = None,
    ) -> None:
        """One failure (`headline`: what failed, e.g. "item failed on attempt 1"); `trace` is
        called only when this one is logged whole."""
        key = (stage, kind or kind_of(text))
        with self._lock:
            first = key not in self._seen
            if first:
                self._seen.add(key)
            else:
                tally = self._tallies.get(stage)
                if tally is None:
                    tally = self._tallies[stage] = _Tally(since=time.monotonic())
                tally.failed += 1
                tally.dead += gave_up
                tally.last, tally.last_run = text, run
                if tally.timer is None and not self._closed:
                    delay = max(0.0, tally.since + self.interval - time.monotonic())
                    tally.timer = threading.Timer(delay, self._summarise, (stage,))
                    tally.timer.daemon = True
                    tally.timer.start()
        if not first:
            return
        stack = trace()
        log.error(
            "%s: %s%s\n(the first %s at stage %r of this version: further failures are summarised "
            "every %gs; each dead letter keeps its traceback)",
            headline, short(text), "\n" + stack.rstrip() if stack else "", key[1], stage, self.interval,
            extra={"pipeline": self.pipeline, "stage": stage, "run": run},
        )  # fmt: skip

    def _summarise(self, stage: str) -> None:
        with self._lock:
            tally = self._tallies.get(stage)
            if tally is None:
                return
            line = self._take(stage, tally)
        if line:
            log.error("%s", line, extra={"pipeline": self.pipeline, "stage": stage})

    def _take(self, stage: str, tally: _Tally) -> str:
        """The summary line of `tally` (lock held); resets it."""
        now = time.monotonic()
        tally.timer = None
        if not tally.failed:
            tally.since = now
            return ""
        took = now - tally.since
        line = (
            f"stage {stage!r}: {tally.failed} more failed attempt{'s' if tally.failed != 1 else ''} in the "
            f"last {took:.1f}s ({tally.dead} dead-lettered); last: run {tally.last_run}: {short(tally.last)}"
        )
        tally.failed = tally.dead = 0
        tally.since = now
        return line

    def flush(self) -> None:
        """Write every pending summary now and stop the timers (the version drained)."""
        with self._lock:
            self._closed = True
            lines = []
            for stage, tally in self._tallies.items():
                if tally.timer is not None:
                    tally.timer.cancel()
                lines.append((stage, self._take(stage, tally)))
        for stage, line in lines:
            if line:
                log.error("%s", line, extra={"pipeline": self.pipeline, "stage": stage})
