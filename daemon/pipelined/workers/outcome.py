"""What one attempt at one item produced in a worker process: `ItemOutcome`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple


class ItemOutcome(NamedTuple):
    """The result of one attempt at one item (see docs/architecture.md, engine ↔ workers).

    `outputs`: what the item emitted downstream (a processor's return value unless None, every
    value a generator yielded, and `ctx.emit(...)` calls, in the order they happened);
    `routed`: `ctx.emit_to(stage, item)` pairs; `filtered`: a processor emitted nothing;
    `error`: `"TypeName: message"` when the attempt failed (then outputs/routed are empty);
    `traceback`: the formatted traceback text, when there is one; `seconds`: time inside the callable.

    A NamedTuple rather than a dataclass: same fields and keyword construction, read-only, and
    about twice as cheap to build — the daemon builds one per item of every batch.
    """

    outputs: Sequence[Any]  # a list, or the shared empty tuple when nothing was emitted
    routed: Sequence[tuple[str, Any]]
    filtered: bool
    error: str | None
    traceback: str | None
    seconds: float


def failed(error: str, traceback: str | None = None, seconds: float = 0.0) -> ItemOutcome:
    return ItemOutcome([], [], False, error, traceback, seconds)


class ProducerFailed(Exception):
    """A producer running in a worker process raised (or its worker died): `error` is
    `"TypeName: message"`, `traceback` the formatted text from the worker (or None)."""

    def __init__(self, error: str, traceback: str | None = None) -> None:
        self.error = error
        self.traceback = traceback
        super().__init__(error)
