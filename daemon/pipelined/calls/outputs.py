"""One item's outputs as `Invoker.call_item` collects them: a list, or with a spill, handed on
every SPILL_AT as they come (a generator yielding millions never holds more than that)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

Spill = Callable[[list[Any]], None]
SPILL_AT = 1024  # outputs of one item handed on at once when they are streamed (call_item's spill)


class Outputs:
    """One item's outputs; with a spill, handed on every SPILL_AT as they come."""

    __slots__ = ("items", "spill", "spilled", "_extending")

    def __init__(self, spill: Spill | None) -> None:
        self.items: list[Any] = []
        self.spill = spill
        self.spilled = 0
        self._extending = False  # a ctx.emit inside extend() must not swap the list extend() fills

    def append(self, value: Any) -> None:
        self.items.append(value)
        if self.spill is not None and not self._extending and len(self.items) >= SPILL_AT:
            self._hand_on()

    def extend(self, iterable: Iterable[Any]) -> None:
        if self.spill is None:
            self.items.extend(iterable)
            return
        values = iter(iterable)
        while True:
            before = len(self.items)
            wanted = max(1, SPILL_AT - before)
            self._extending = True
            try:
                self.items.extend(islice(values, wanted))
            finally:
                self._extending = False
            if len(self.items) - before < wanted:
                return  # exhausted (what is left is returned with the item)
            self._hand_on()

    def _hand_on(self) -> None:
        assert self.spill is not None
        part, self.items = self.items, []
        self.spilled += len(part)
        self.spill(part)

    def none(self) -> bool:
        """Nothing was emitted at all (the item is filtered)."""
        return not self.items and not self.spilled


def take(pending: list[Any]) -> list[Any]:
    taken = pending[:]
    pending.clear()
    return taken
