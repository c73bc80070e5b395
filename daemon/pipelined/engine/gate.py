"""`rate_limit` and `concurrency` of a stage: a token bucket and slots in front of its queue.

A stage with neither has no gate and takes from its queue as before (nothing on its path
changes). A gated stage's workers — threads, an async stage's feeder, the feeders of worker
processes, fork_per_item and Ray actors — take through `StageGate.take`:

1. a concurrency slot (one per worker call in progress; a fork_per_item batch is one item per
   slot, since its items run side by side),
2. once something is queued, tokens: as many as the bucket holds right now, at least one
   (waiting for it), at most what the worker would take,
3. at most that many items from the queue; unused tokens go back.

So the daemon hands out the tokens before a batch leaves for a worker, and no worker calls more
items than it was given tokens for. Every wait is cut into slices of at most WAIT_SLICE_S that
check whether the queue was closed (drain finished) or abandoned (drain deadline), and
`wake()` ends them at once; waiting for a token adds to the stage's `throttled_s`.

Buckets and slots live in the pipeline's book (`PipelineBook.limiter`), so a reload keeps the
rate and the cap (no fresh burst per version; a draining version and its successor share them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pipelined.config.spec import RateLimit
from pipelined.engine.counters import StageCounters
from pipelined.engine.queues import Chunk, StageQueue

WAIT_SLICE_S = 0.1
Cancelled = Callable[[], bool]


class TokenBucket:
    """`count` tokens, refilled at `count / period` per second; starts full (a burst of `count`)."""

    def __init__(self, rate: RateLimit, counters: StageCounters) -> None:
        self.rate = rate
        self.capacity = float(rate.count)
        self.per_s = rate.per_second
        self.counters = counters  # throttled_s
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._cond = threading.Condition()

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.per_s)
        self._stamp = now

    def acquire(self, want: int, cancelled: Cancelled) -> int:
        """1..`want` tokens (what the bucket holds, waiting for one); 0 when `cancelled()`."""
        with self._cond:
            waited_since = 0.0
            while True:
                now = time.monotonic()
                self._refill(now)
                if waited_since:
                    self.counters.add_throttled(now - waited_since)
                if self._level >= 1.0:
                    granted = min(max(1, want), int(self._level))
                    self._level -= granted
                    return granted
                if cancelled():
                    return 0
                waited_since = now
                self._cond.wait(min(WAIT_SLICE_S, (1.0 - self._level) / self.per_s))

    def give_back(self, tokens: int) -> None:
        if tokens > 0:
            with self._cond:
                self._refill(time.monotonic())
                self._level = min(self.capacity, self._level + tokens)
                self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Slots:
    """At most `limit` holders at once (a semaphore whose waits can be cancelled)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._cond = threading.Condition()

    def acquire(self, cancelled: Cancelled) -> bool:
        with self._cond:
            while self._free <= 0:
                if cancelled():
                    return False
                self._cond.wait(WAIT_SLICE_S)
            self._free -= 1
            return True

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class StageGate:
    def __init__(self, bucket: TokenBucket | None, slots: Slots | None, *, one_item_per_slot: bool = False) -> None:
        self.bucket = bucket
        self.slots = slots
        self.one_item_per_slot = one_item_per_slot and slots is not None
        self._woken = False

    def take(self, queue: StageQueue, limit: int, sharers: int = 1) -> Chunk | None:
        """The next chunk for one worker call; None when the queue is closed and empty,
        abandoned, or the gate was woken for good (`wake`). Call `done()` after the chunk's
        call when the gate has slots."""

        def cancelled() -> bool:
            return self._woken or queue.abandoned or (queue.closed and queue.depth == 0)

        slots = self.slots
        if slots is not None and not slots.acquire(cancelled):
            return None
        if self.one_item_per_slot:
            limit = 1
        try:
            chunk = queue.take(limit, sharers=sharers) if self.bucket is None else self._take_tokens(
                queue, limit, sharers, cancelled
            )
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        if chunk is None and slots is not None:
            slots.release()
        return chunk

    def _take_tokens(self, queue: StageQueue, limit: int, sharers: int, cancelled: Cancelled) -> Chunk | None:
        bucket = self.bucket
        assert bucket is not None
        while True:
            if not queue.wait_available():
                return None
            if sharers > 1:  # leave most of the queue to the other workers, as StageQueue.take does
                limit = min(limit, 16, max(1, queue.depth // (4 * sharers)))
            granted = bucket.acquire(limit, cancelled)
            if granted == 0:
                return None
            chunk = queue.take_nowait(granted)
            if chunk is None:  # another worker took it meanwhile
                bucket.give_back(granted)
                continue
            bucket.give_back(granted - len(chunk.items))
            return chunk

    def done(self) -> None:
        """A chunk taken through `take` was called: its slot is free."""
        if self.slots is not None:
            self.slots.release()

    def wake(self) -> None:
        """Drain deadline: end every wait now (takes return None from then on)."""
        self._woken = True
        for part in (self.bucket, self.slots):
            if part is not None:
                part.wake()
