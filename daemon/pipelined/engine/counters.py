"""Per-(pipeline, stage) counters that survive reloads, updated per chunk without locks.

Each worker thread owns a `CounterCell` (plain attribute adds by one thread only); threads that
are not workers (routers, the retry timer, drain) add through `StageCounters.add` under a lock.
Reading sums every cell. A worker retires its cell when it exits (folded into the base).
"""

from __future__ import annotations

import threading
import time

COUNTER_NAMES: tuple[str, ...] = (
    "items_in",
    "items_out",
    "items_failed",
    "items_retried",
    "items_dropped",
    "items_dead_lettered",
)


class CounterCell:
    __slots__ = (*COUNTER_NAMES, "busy_seconds", "busy_since")

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.items_failed = 0
        self.items_retried = 0
        self.items_dropped = 0
        self.items_dead_lettered = 0
        self.busy_seconds = 0.0  # time spent inside the callable, finished calls
        self.busy_since = 0.0  # perf_counter() when the current call began, 0 when idle

    def begin(self) -> float:
        now = time.perf_counter()
        self.busy_since = now
        return now

    def end(self, began: float) -> None:
        self.busy_seconds += time.perf_counter() - began
        self.busy_since = 0.0


class StageCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base = CounterCell()
        self._cells: list[CounterCell] = []
        self.throttled_s = 0.0  # time workers waited for a rate_limit token (engine/gate.py)

    def cell(self) -> CounterCell:
        cell = CounterCell()
        with self._lock:
            self._cells.append(cell)
        return cell

    def retire(self, cell: CounterCell) -> None:
        with self._lock:
            if cell in self._cells:
                self._cells.remove(cell)
                for name in (*COUNTER_NAMES, "busy_seconds"):
                    setattr(self._base, name, getattr(self._base, name) + getattr(cell, name))

    def add_throttled(self, seconds: float) -> None:
        with self._lock:
            self.throttled_s += seconds

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._base, name, getattr(self._base, name) + n)

    def totals(self) -> dict[str, float]:
        """Counters plus busy_seconds (including calls in progress) and busy (workers in a call)."""
        now = time.perf_counter()
        totals: dict[str, float] = {name: 0 for name in COUNTER_NAMES}
        busy_seconds = 0.0
        busy = 0
        with self._lock:  # read under the lock retire() folds under: a retiring cell counts once
            for cell in (self._base, *self._cells):
                for name in COUNTER_NAMES:
                    totals[name] += getattr(cell, name)
                busy_seconds += cell.busy_seconds
                since = cell.busy_since
                if since:
                    busy += 1
                    busy_seconds += max(0.0, now - since)
            throttled = self.throttled_s
        totals["busy_seconds"] = busy_seconds
        totals["busy"] = busy
        totals["throttled_s"] = throttled
        return totals
