"""A stage queue's chunks ordered by run priority: one FIFO lane per priority.

`StageQueue` keeps its chunks in a plain deque until a chunk of a run whose priority is not 0
arrives; then it moves them into `PriorityLanes` (and back to a deque once it is empty again),
so a pipeline that never uses priorities never pays for them. `PriorityLanes` offers the few
deque operations the queue uses (`append`, `[0]`, `popleft`, `len`, iteration, `clear`):

- `[0]` is the chunk to serve next: the head of the highest-priority lane — unless the head of
  some lane has waited `max_wait_s` or longer, then the oldest such head (no run starves).
- `popleft()` removes the chunk the last `[0]` returned.
- `evict(excess)` (on_full = "drop_oldest") drops the oldest items of the lowest priority first.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from pipelined.engine.runs import Run


class Queued(Protocol):
    """What lanes read of a queued chunk (`queues.Chunk`)."""

    run: Run
    items: list[Any]
    enqueued_at: float
    flush: bool

    def part(self, start: int, stop: int | None) -> Any:
        """items[start:stop] as a chunk of its own."""

    def drop_first(self, n: int) -> None:
        """Forget the first n items."""


Chunk = TypeVar("Chunk", bound=Queued)


class PriorityLanes(Generic[Chunk]):
    __slots__ = ("max_wait_s", "_lanes", "_order", "_count", "_picked")

    def __init__(self, chunks: Iterable[Chunk], max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._lanes: dict[int, deque[Chunk]] = {}
        self._order: list[int] = []  # negated priorities of the non-empty lanes, ascending
        self._count = 0
        self._picked: deque[Chunk] | None = None
        for chunk in chunks:
            self.append(chunk)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Chunk]:
        """Every chunk, highest priority first, FIFO within a priority."""
        for key in self._order:
            yield from self._lanes[-key]

    def append(self, chunk: Chunk) -> None:
        priority = chunk.run.priority
        lane = self._lanes.get(priority)
        if lane is None:
            lane = self._lanes[priority] = deque()
            bisect.insort(self._order, -priority)
        lane.append(chunk)
        self._count += 1

    def clear(self) -> None:
        self._lanes.clear()
        self._order.clear()
        self._count = 0
        self._picked = None

    def __getitem__(self, index: int) -> Chunk:
        if index != 0 or not self._count:
            raise IndexError(index)
        lane = self._picked = self._pick()
        return lane[0]

    def popleft(self) -> Chunk:
        lane = self._picked if self._picked is not None else self._pick()
        self._picked = None
        chunk = lane.popleft()
        self._count -= 1
        if not lane:
            priority = chunk.run.priority
            del self._lanes[priority]
            self._order.remove(-priority)
        return chunk

    def _pick(self) -> deque[Chunk]:
        lanes, order = self._lanes, self._order
        best = lanes[-order[0]]
        if len(order) == 1:
            return best
        overdue = time.perf_counter() - self.max_wait_s
        oldest: deque[Chunk] | None = None
        for key in order[1:]:  # the best lane is served anyway
            lane = lanes[-key]
            waited_since = lane[0].enqueued_at
            if waited_since <= overdue and (oldest is None or waited_since < oldest[0].enqueued_at):
                oldest = lane
        if oldest is not None and oldest[0].enqueued_at < best[0].enqueued_at:
            return oldest
        return best

    def evict(self, excess: int) -> tuple[list[Chunk], int]:
        """Drop at least `excess` items (whole chunks, or the front of one), lowest priority and
        oldest first; control entries (accumulator flush requests) stay. (dropped, items dropped)."""
        dropped: list[Chunk] = []
        removed = 0
        for key in reversed(list(self._order)):
            lane = self._lanes[-key]
            kept: deque[Chunk] = deque()
            while lane and removed < excess:
                chunk = lane.popleft()
                if chunk.flush or not chunk.items:
                    kept.append(chunk)
                    continue
                take = min(len(chunk.items), excess - removed)
                removed += take
                if take < len(chunk.items):
                    dropped.append(chunk.part(0, take))
                    chunk.drop_first(take)
                    kept.append(chunk)
                else:
                    dropped.append(chunk)
                    self._count -= 1
            kept.extend(lane)
            lane.clear()
            lane.extend(kept)
            if not lane:
                del self._lanes[-key]
                self._order.remove(key)
            if removed >= excess:
                break
        self._picked = None
        return dropped, removed
