"""Stats rows (api.md "Stats"): counters from the book, windows and latency per version.

`utilization` and `throughput_per_s` compare the counters now with a sample taken about 60 s
ago, or since the version started when that is shorter. Samples are taken whenever stats are
read, at start, and every `SAMPLE_EVERY_S` by one daemon-wide sampler thread — so a stage that
has been idle for a minute shows 0 (and no bottleneck) even if nobody read its stats meanwhile.
Latency samples (track_latency) are kept per chunk.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from typing import Any

from pipelined.engine.counters import COUNTER_NAMES, StageCounters

WINDOW_S = 60.0
SAMPLE_EVERY_S = 5.0
LATENCY_SAMPLES = 20_000


def _now() -> float:
    return time.monotonic()


class StageMeter:
    def __init__(self, counters: StageCounters, kind: str, workers: int, latency: bool) -> None:
        self.counters = counters
        self.kind = kind
        self.workers = workers
        self._samples: deque[tuple[float, float, float]] = deque()
        self._latency: deque[float] | None = deque(maxlen=LATENCY_SAMPLES) if latency else None
        self._lock = threading.Lock()
        self.sample()
        _SAMPLER.watch(self)

    def _work_count(self, totals: dict[str, float]) -> float:
        return totals["items_out"] if self.kind == "producer" else totals["items_in"]

    def sample(self) -> dict[str, float]:
        totals = self.counters.totals()
        now = _now()
        with self._lock:
            self._samples.append((now, self._work_count(totals), totals["busy_seconds"]))
            while len(self._samples) > 2 and self._samples[1][0] <= now - WINDOW_S:
                self._samples.popleft()
        return totals

    def record_latency(self, seconds: float, n: int) -> None:
        if self._latency is not None and n > 0:
            self._latency.extend([seconds * 1000.0] * min(n, 64))

    def row(self, queue_depth: int, queue_capacity: int, threads: int, processes: int) -> dict[str, Any]:
        totals = self.sample()
        with self._lock:
            t0, count0, busy0 = self._samples[0]
            t1, count1, busy1 = self._samples[-1]
        elapsed = max(t1 - t0, 1e-9)
        capacity = elapsed * max(1, self.workers)
        utilization = 0.0 if self.workers == 0 else min(1.0, max(0.0, (busy1 - busy0) / capacity))
        row: dict[str, Any] = {"kind": self.kind}
        row.update({name: int(totals[name]) for name in COUNTER_NAMES})
        row.update(
            {
                "queue_depth": queue_depth,
                "queue_capacity": queue_capacity,
                "threads": threads,
                "processes": processes,
                "busy": int(totals["busy"]),
                "utilization": round(utilization, 4),
                "throughput_per_s": round((count1 - count0) / elapsed, 3) if t1 > t0 else 0.0,
                "throttled_s": round(totals["throttled_s"], 3),
            }
        )
        if self._latency is not None:
            row["latency_ms"] = self._percentiles()
        return row

    def _percentiles(self) -> dict[str, float]:
        assert self._latency is not None
        values = sorted(self._latency)
        if not values:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0}

        def pick(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))], 3)

        return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99)}


class _Sampler:
    """One daemon thread sampling every live meter every `SAMPLE_EVERY_S` (meters held weakly)."""

    def __init__(self) -> None:
        self._meters: weakref.WeakSet[StageMeter] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, meter: StageMeter) -> None:
        with self._lock:
            self._meters.add(meter)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pipelined-stats-sampler", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(SAMPLE_EVERY_S)
            with self._lock:
                meters = list(self._meters)
            for meter in meters:
                try:
                    meter.sample()
                except Exception:  # noqa: BLE001, S112 - a sample is best effort; the next one comes
                    continue


_SAMPLER = _Sampler()
