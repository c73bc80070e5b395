"""Lineages: when is everything derived from one group of entered items finished?

A `Lineage` counts the items in flight that came from one *entry* (a producer's slice, a
trigger's items, a replayed row of the disk buffer) — in the same units and at the same moments
as `Run.settle` counts a run's: chunks carry their lineage (`Chunk.lineage`), everything a
stage sends on for a chunk (outputs, broadcast copies, `ctx.emit_to` items, retries) carries the
same one, and `Run.settle(..., lineage=)` applies the chunk's `enter - leave` to it. A lineage
starts with one unit held by its creator, released by `seal()` once the entry's items were sent,
so it cannot reach zero before they are on their way. At zero, `on_done(lineage)` runs once.

An accumulator batch gets its own lineage whose `parents` are the lineages of the items in it,
each holding one unit per item until the batch's lineage is done; the batch's own counts (what
became of it: finished, filtered, dead-lettered) are then added to its first parent, so an
entry's stored counters include what its batches did.

Memory pipelines pass `None` everywhere unless a producer asked to hear when its items finish
(`tail_file` offsets); docs/durability.md has the design.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

DoneCallback = Callable[["Lineage"], None]


class Lineage:
    """The items in flight derived from one entry (or one accumulator batch)."""

    __slots__ = (
        "_lock", "pending", "finished", "filtered", "dead_lettered", "last_error",
        "entries", "replays", "parents", "on_done", "tag",
    )  # fmt: skip

    def __init__(
        self,
        on_done: DoneCallback | None,
        *,
        entries: Sequence[tuple[int, int]] = (),
        replays: int = 0,
        parents: Sequence[tuple[Lineage, int]] = (),
        tag: Any = None,
    ) -> None:
        self._lock = threading.Lock()
        self.pending = 1  # the creator's hold, released by seal()
        self.finished = 0
        self.filtered = 0
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.entries = tuple(entries)  # the disk buffer's rows: (id, items); () in a memory pipeline
        self.replays = replays
        self.parents = tuple(parents)
        self.on_done = on_done
        self.tag = tag  # whatever the creator needs back in on_done

    @property
    def done(self) -> bool:
        return self.pending == 0

    def apply(
        self, delta: int, finished: int = 0, filtered: int = 0, dead: int = 0, error: str | None = None
    ) -> None:
        """`delta` = items entering minus items leaving flight; the rest is what became of them."""
        with self._lock:
            self.pending += delta
            self.finished += finished
            self.filtered += filtered
            self.dead_lettered += dead
            if error is not None:
                self.last_error = error
            now_done = self.pending == 0 and delta < 0
            if self.pending < 0:
                raise AssertionError(f"lineage of entries {self.entries} went below zero ({self.pending})")
        if now_done:
            self._finish()

    def seal(self) -> None:
        """The creator sent everything: release its hold."""
        self.apply(-1)

    def _finish(self) -> None:
        if self.parents:
            first = self.parents[0][0]
            first.apply(0, self.finished, self.filtered, self.dead_lettered, self.last_error)
            for parent, units in self.parents:
                parent.apply(-units)
        if self.on_done is not None:
            self.on_done(self)


def batch_lineage(parts: Sequence[tuple[Lineage | None, int]]) -> Lineage | None:
    """The lineage of an accumulator batch made of `parts` ((item lineage, how many items), in
    order); None when none of its items has one. Consecutive parts of one lineage are merged."""
    parents: list[tuple[Lineage, int]] = []
    for lineage, units in parts:
        if lineage is None or units <= 0:
            continue
        if parents and parents[-1][0] is lineage:
            parents[-1] = (lineage, parents[-1][1] + units)
        else:
            parents.append((lineage, units))
    if not parents:
        return None
    return Lineage(None, replays=max(p.replays for p, _ in parents), parents=parents)


class Segments:
    """Run-length list of (lineage, count) kept next to an accumulator's buffered items."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[list[Any]] = []

    def add(self, lineage: Lineage | None, count: int) -> None:
        if count <= 0:
            return
        if self.parts and self.parts[-1][0] is lineage:
            self.parts[-1][1] += count
        else:
            self.parts.append([lineage, count])

    def take(self, count: int) -> list[tuple[Lineage | None, int]]:
        """The first `count` items' parts, removed."""
        taken: list[tuple[Lineage | None, int]] = []
        while count > 0 and self.parts:
            lineage, have = self.parts[0]
            if have <= count:
                taken.append((lineage, have))
                self.parts.pop(0)
                count -= have
            else:
                taken.append((lineage, count))
                self.parts[0][1] = have - count
                count = 0
        return taken

    def __len__(self) -> int:
        return sum(part[1] for part in self.parts)
