"""What one attempt at one item produced in a worker process: `ItemOutcome`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class ItemOutcome:
    """The result of one attempt at one item (see docs/architecture.md, engine ↔ workers).

    `outputs`: what the item emitted downstream (a processor's return value unless None, every
    value a generator yielded, and `ctx.emit(...)` calls, in the order they happened);
    `routed`: `ctx.emit_to(stage, item)` pairs; `filtered`: a processor emitted nothing;
    `error`: `"TypeName: message"` when the attempt failed (then outputs/routed are empty);
    `traceback`: the formatted traceback text, when there is one; `seconds`: time inside the callable.
    """

    outputs: list[Any]
    routed: list[tuple[str, Any]]
    filtered: bool
    error: str | None
    traceback: str | None
    seconds: float


def failed(error: str, traceback: str | None = None, seconds: float = 0.0) -> ItemOutcome:
    return ItemOutcome([], [], False, error, traceback, seconds)
