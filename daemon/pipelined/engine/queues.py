"""A stage's bounded input queue: a deque of chunks (lists of items of one run) + Conditions.

Capacity counts items. Workers take whatever is available in one step (up to `max_items`),
never waiting for more; putters of the `block` policy wait for room, `drop_oldest` evicts the
oldest items (returned to the caller, which dead-letters them), `reject` refuses a chunk that
does not fit whole. Items waiting for a retry count against the bound (`waiting`); when their
backoff is over they come back past it (`force=True`, like accumulator flush requests): they
were counted already, and a timer thread must never block. A put that
must reach several queues all-or-nothing (a router behind `reject`, an injected chunk) first
`reserve`s room in each, then `put_reserved`s (or `unreserve`s when one refused).

Chunks are served FIFO in a plain deque until a chunk of a run with a non-zero priority
arrives; from then until the queue is empty again they sit in `PriorityLanes` (lanes.py):
higher priorities first, FIFO within one, and a chunk that has waited `max_wait_s` served next.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from pipelined.engine.lanes import PriorityLanes
from pipelined.engine.lineage import Lineage
from pipelined.engine.runs import Run

OnFull = Literal["block", "drop_oldest", "reject"]


class QueueRejected(Exception):
    """The chunk does not fit into a queue whose on_full is "reject"."""


class QueueAbandoned(Exception):
    """The runtime gave up on the queue (drain deadline): nothing more goes in or out.

    `left`: the items of the chunk being put that did not get in (None: none of them did) —
    a blocked put may have queued part of its chunk already (the drain dead-letters those)."""

    def __init__(self, stage: str, left: list[Any] | None = None) -> None:
        super().__init__(stage)
        self.left = left


class Chunk:
    """Items of one run travelling together; `attempts` > 0 marks a retry (one item).

    `lineage`: the entry the items derive from (lineage.py; None in a memory pipeline);
    `ids`: the items' numbers within their run (ctx.item_id), when the pipeline tracks them."""

    __slots__ = ("run", "items", "attempts", "enqueued_at", "flush", "lineage", "ids")

    def __init__(
        self,
        run: Run,
        items: list[Any],
        attempts: int = 0,
        *,
        flush: bool = False,
        lineage: Lineage | None = None,
        ids: Sequence[int] | None = None,
    ) -> None:
        self.run = run
        self.items = items
        self.attempts = attempts
        self.enqueued_at = time.perf_counter()
        self.flush = flush  # an accumulator flush request for `run` (no items)
        self.lineage = lineage
        self.ids = ids

    def part(self, start: int, stop: int | None) -> Chunk:
        """items[start:stop] as a chunk of its own (same run, attempts, lineage, enqueue time)."""
        ids = self.ids
        part = Chunk(self.run, self.items[start:stop], self.attempts, lineage=self.lineage,
                     ids=None if ids is None else ids[start:stop])
        part.enqueued_at = self.enqueued_at
        return part

    def drop_first(self, n: int) -> None:
        """Forget the first n items (they went elsewhere)."""
        self.items = self.items[n:]
        if self.ids is not None:
            self.ids = self.ids[n:]


Dropped = list[Chunk]


class StageQueue:
    def __init__(self, stage: str, capacity: int, on_full: OnFull, max_wait_s: float = 30.0) -> None:
        self.stage = stage
        self.capacity = max(1, capacity)
        self.on_full = on_full
        self.depth = 0  # items queued (flush requests count 0)
        self.reserved = 0  # room set aside for all-or-nothing puts (reserve / put_reserved)
        self.waiting = 0  # items of this stage waiting for a retry: they count against the bound
        self.idle_takers = 0  # workers waiting for work right now (read without the lock)
        self.pending_wakeups = 0  # of those, already notified (about to take)
        self.abandoned = False
        self.max_wait_s = max_wait_s  # priority_max_wait
        self.prioritized = False  # chunks in PriorityLanes (a run with a priority is queued)
        self._chunks: deque[Chunk] | PriorityLanes[Chunk] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False

    # -- putting ----------------------------------------------------------------------------
    def put(
        self, chunk: Chunk, *, force: bool = False, timeout: float | None = None, retry: bool = False
    ) -> Dropped:
        """Enqueue per `on_full`; returns what drop_oldest evicted (to be dead-lettered).

        block: waits for room, in pieces when the chunk is larger than the room (TimeoutError
        after `timeout`); reject: QueueRejected when the whole chunk does not fit. A queue
        that was closed or abandoned takes nothing more (QueueAbandoned). `retry`: a chunk
        that was `waiting` for its retry comes back (with `force`; its room was counted).
        """
        with self._lock:
            if retry:
                self.waiting = max(0, self.waiting - len(chunk.items))
            if self.abandoned or self._closed:
                raise QueueAbandoned(self.stage)
            if force or self.on_full == "drop_oldest":
                self._append(chunk)
                return self._evict() if not force else []
            if self.on_full == "reject":
                if self.depth + self.reserved + self.waiting + len(chunk.items) > self.capacity:
                    raise QueueRejected(self.stage)
                self._append(chunk)
                return []
            self._put_blocking(chunk, timeout)
            return []

    def reserve(self, n: int, timeout: float = 0.0) -> None:
        """Set room for `n` items aside, for a put that must be all-or-nothing across queues.

        reject: QueueRejected at once when there is no room; block: waits up to `timeout`
        (TimeoutError), and an empty queue takes a chunk larger than itself whole;
        drop_oldest: nothing to reserve (its put evicts). Then `put_reserved` or `unreserve`."""
        if self.on_full == "drop_oldest" or n <= 0:
            return
        with self._lock:
            if self.abandoned or self._closed:
                raise QueueAbandoned(self.stage)
            if self.on_full == "reject":
                if self.depth + self.reserved + self.waiting + n > self.capacity:
                    raise QueueRejected(self.stage)
            else:
                deadline = time.monotonic() + timeout
                while (used := self.depth + self.reserved + self.waiting) and used + n > self.capacity:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(self.stage)
                    self._not_full.wait(left)
                    if self.abandoned or self._closed:
                        raise QueueAbandoned(self.stage)
            self.reserved += n

    def add_waiting(self, n: int) -> None:
        """Items of this stage wait for a retry (n > 0) or were given up while waiting (n < 0).

        Waiting items count against the queue's bound, so a backlog of retries holds the
        senders back (block), is refused new items (reject) or pushes queued ones out
        (drop_oldest) — it never grows past the bound."""
        with self._lock:
            self.waiting = max(0, self.waiting + n)
            if n < 0:
                self._not_full.notify_all()

    def unreserve(self, n: int) -> None:
        if self.on_full == "drop_oldest" or n <= 0:
            return
        with self._lock:
            self.reserved = max(0, self.reserved - n)
            self._not_full.notify_all()

    def put_reserved(self, chunk: Chunk) -> Dropped:
        """Enqueue a chunk whose room `reserve` set aside (never waits, never refuses)."""
        with self._lock:
            if self.on_full != "drop_oldest":
                self.reserved = max(0, self.reserved - len(chunk.items))
            if self.abandoned or self._closed:
                self._not_full.notify_all()
                raise QueueAbandoned(self.stage)
            self._append(chunk)
            return self._evict() if self.on_full == "drop_oldest" else []

    def _put_blocking(self, chunk: Chunk, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0  # items of the chunk queued so far (in parts, as room appeared)
        while True:
            room = self.capacity - self.depth - self.reserved - self.waiting
            if room >= len(chunk.items) - done:
                self._append(chunk.part(done, None) if done else chunk)
                return
            if room > 0:
                self._append(chunk.part(done, done + room))
                done += room
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(self.stage)
            self._not_full.wait(left)
            if self.abandoned:
                raise QueueAbandoned(self.stage, chunk.items[done:])

    def _append(self, chunk: Chunk) -> None:
        if chunk.run.priority and not self.prioritized:
            self._chunks = PriorityLanes(self._chunks, self.max_wait_s)
            self.prioritized = True
        self._chunks.append(chunk)
        self.depth += len(chunk.items)
        if self.idle_takers > self.pending_wakeups:
            self.pending_wakeups += 1
            self._not_empty.notify()

    def _evict(self) -> Dropped:
        if isinstance(self._chunks, PriorityLanes):
            excess = min(self.depth, self.depth + self.reserved + self.waiting - self.capacity)
            if excess <= 0:
                return []
            evicted, removed = self._chunks.evict(excess)
            self.depth -= removed
            return evicted
        dropped: Dropped = []
        while (excess := self.depth + self.reserved + self.waiting - self.capacity) > 0 and self.depth > 0:
            oldest = self._chunks[0]
            if oldest.flush or not oldest.items:
                self._chunks.rotate(-1)  # keep control entries; look at the next chunk
                continue
            if len(oldest.items) <= excess:
                self._chunks.popleft()
                dropped.append(oldest)
                self.depth -= len(oldest.items)
            else:
                dropped.append(oldest.part(0, excess))
                oldest.drop_first(excess)
                self.depth -= excess
        return dropped

    # -- taking -----------------------------------------------------------------------------
    def take(self, max_items: int, timeout: float | None = None, sharers: int = 1) -> Chunk | None:
        """The oldest chunk(s) of one run, up to `max_items`; None when closed/abandoned/timed out.

        With several `sharers` (workers of the stage) a taker leaves most of the queue to the
        others: at most a quarter of the depth per sharer, at most 16 items.
        """
        with self._lock:
            while not self._chunks:
                if self._closed or self.abandoned:
                    return None
                self.idle_takers += 1
                try:
                    woke = self._not_empty.wait(timeout)
                finally:
                    self.idle_takers -= 1
                    if self.pending_wakeups:
                        self.pending_wakeups -= 1
                if not woke and not self._chunks:
                    return None
            if self.abandoned:
                return None
            if sharers > 1:
                max_items = min(max_items, 16, max(1, self.depth // (4 * sharers)))
            chunk = self._pop(max_items)
            self.depth -= len(chunk.items)
            if self.depth + self.reserved + self.waiting < self.capacity:
                self._not_full.notify_all()
            self._wake_next()
            return chunk

    def _wake_next(self) -> None:
        """A taker left work behind (it took its share of a larger chunk): wake an idle sibling,
        who does the same — so a chunk of N items spreads over N idle workers, not one."""
        if self._chunks and self.idle_takers > self.pending_wakeups:
            self.pending_wakeups += 1
            self._not_empty.notify()

    def _pop(self, max_items: int) -> Chunk:
        """The oldest chunk, merged with following chunks of the same run (up to max_items)."""
        chunks = self._chunks
        chunk = chunks[0]
        if len(chunk.items) > max_items:
            part = chunk.part(0, max_items)
            chunk.drop_first(max_items)
            return part
        chunks.popleft()
        if chunk.flush or chunk.attempts:
            if self.prioritized and not chunks:
                self._unprioritize()
            return chunk
        while chunks:
            nxt = chunks[0]
            if nxt.run is not chunk.run or nxt.flush or nxt.attempts or nxt.lineage is not chunk.lineage:
                break
            if len(chunk.items) + len(nxt.items) > max_items:
                break
            chunks.popleft()
            chunk.items = chunk.items + nxt.items
            if chunk.ids is not None and nxt.ids is not None:
                chunk.ids = [*chunk.ids, *nxt.ids]
        if self.prioritized and not chunks:
            self._unprioritize()
        return chunk

    def _unprioritize(self) -> None:
        """The lanes are empty: back to the plain FIFO until the next chunk with a priority."""
        self._chunks = deque()
        self.prioritized = False

    def wait_available(self) -> bool:
        """Block until something is queued (True) or the queue is closed and empty / abandoned."""
        with self._lock:
            while not self._chunks:
                if self._closed or self.abandoned:
                    return False
                self.idle_takers += 1
                try:
                    self._not_empty.wait()
                finally:
                    self.idle_takers -= 1
                    if self.pending_wakeups:
                        self.pending_wakeups -= 1
            return not self.abandoned

    def take_nowait(self, max_items: int) -> Chunk | None:
        with self._lock:
            if not self._chunks or self.abandoned:
                return None
            chunk = self._pop(max_items)
            self.depth -= len(chunk.items)
            if self.depth + self.reserved + self.waiting < self.capacity:
                self._not_full.notify_all()
            self._wake_next()
            return chunk

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake idle takers: once empty, `take` returns None (workers exit)."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()

    def abandon(self) -> list[Chunk]:
        """Drain deadline: empty the queue, wake everyone; returns what was queued."""
        with self._lock:
            self.abandoned = True
            left = list(self._chunks)
            self._chunks = deque()
            self.prioritized = False
            self.depth = 0
            self.reserved = 0
            self.waiting = 0
            self._not_empty.notify_all()
            self._not_full.notify_all()
            return left

    def wake(self) -> None:
        with self._lock:
            self._not_empty.notify_all()
