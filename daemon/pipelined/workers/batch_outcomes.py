"""`BatchOutcomes`: the outcomes of a whole batch from a plain function, built only when read.

`process()` returns one of these when a batch came back whole in the compact form (see
protocol.py). It is a read-only sequence of `ItemOutcome`, one per item and in order, like the
list the contract promises; the ItemOutcomes are built the first time one is read. A caller on
the hot path can skip them entirely:

    outputs = outcomes.plain_outputs      # every output in item order, or None when some item failed
    filtered = outcomes.filtered_count    # items that emitted nothing (processors)

`plain_outputs` is None when an item failed: the caller then reads the outcomes one by one.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Sequence
from typing import Any, overload

from pipelined.workers.outcome import ItemOutcome

_NOT_NONE = functools.partial(operator.is_not, None)
NOTHING: tuple[()] = ()  # shared, immutable "no outputs" / "no routed items"


class BatchOutcomes(Sequence[ItemOutcome]):
    __slots__ = ("_results", "_seconds", "_errors", "_filtered_when_none", "_made", "_kept")

    def __init__(
        self, results: list[Any], seconds: list[float], errors: dict[int, Any], filtered_when_none: bool
    ) -> None:
        self._results = results
        self._seconds = seconds
        self._errors = errors
        self._filtered_when_none = filtered_when_none
        self._made: list[ItemOutcome] | None = None
        self._kept: list[Any] | None = None

    @property
    def plain_outputs(self) -> list[Any] | None:
        if self._errors:
            return None
        kept = self._not_none()
        return self._results if len(kept) == len(self._results) else kept

    @property
    def filtered_count(self) -> int:
        if not self._filtered_when_none:
            return 0
        nones = len(self._results) - len(self._not_none())
        return nones - sum(1 for i in self._errors if self._results[i] is None)

    def _not_none(self) -> list[Any]:
        """The results that are not None, by identity: a numpy-like value's `==` is never called."""
        if self._kept is None:
            self._kept = list(filter(_NOT_NONE, self._results))
        return self._kept

    def __len__(self) -> int:
        return len(self._results)

    @overload
    def __getitem__(self, index: int) -> ItemOutcome: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ItemOutcome]: ...

    def __getitem__(self, index: int | slice) -> ItemOutcome | Sequence[ItemOutcome]:
        return self.materialize()[index]

    def __iter__(self) -> Iterator[ItemOutcome]:
        return iter(self.materialize())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BatchOutcomes({self.materialize()!r})"

    def materialize(self) -> list[ItemOutcome]:
        """The ItemOutcomes as a list (built once)."""
        if self._made is None:
            new = tuple.__new__  # the NamedTuple's own __new__ is a Python function: 2x slower per item
            filtered = self._filtered_when_none
            made = [
                new(ItemOutcome, (NOTHING, NOTHING, filtered, None, None, took)) if value is None
                else new(ItemOutcome, ([value], NOTHING, False, None, None, took))
                for value, took in zip(self._results, self._seconds, strict=True)
            ]
            for index, row in self._errors.items():
                made[index] = ItemOutcome(*row)
            self._made = made
        return self._made
