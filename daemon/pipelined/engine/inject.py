"""Putting injected items (a trigger's `items`, a link's delivery) into a stage, all or none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelined.engine.queues import Chunk, Dropped, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.router import Target
from pipelined.engine.runs import Run
from pipelined.errors import Conflict, QueueFull, Unavailable

INJECT_TIMEOUT = 5.0


def put_all(
    pipeline: str,
    stage: str,
    queue: StageQueue | None,
    entrance: Target,
    run: Run,
    items: list[Any],
    on_dropped: Callable[[str, Dropped], None],
) -> None:
    """Queue `items` (already counted in flight for `run`) into `stage`'s queue, or a nested
    pipeline's `entrance`: QueueFull when an `on_full = "reject"` queue has no room for all of
    them, Unavailable when a `block` queue has none within INJECT_TIMEOUT, Conflict when the
    drain deadline closed the queue; `drop_oldest` evictions go to `on_dropped` (dead-lettered
    "dropped")."""
    where = f"pipeline {pipeline!r}, stage {stage!r}"
    n = len(items)
    try:
        if queue is None:  # a nested pipeline: through its entrance
            run.settle(finished=entrance.send(run, items))
            run.settle(leave=n)
        else:
            dropped = queue.put_all_or_nothing(Chunk(run, items), INJECT_TIMEOUT)
            if dropped:
                on_dropped(stage, dropped)
    except QueueRejected:
        raise QueueFull(
            f"{where}: its queue has no room for {n} items "
            f"({queue.depth}/{queue.capacity} queued, on_full = \"reject\")" if queue else f"{where}: queue full"
        ) from None
    except QueueAbandoned:
        raise Conflict(f"{where}: the pipeline is draining (past its deadline): it takes no items") from None
    except TimeoutError:
        raise Unavailable(
            f"{where}: could not enqueue {n} items within {INJECT_TIMEOUT:g} s (queue full, on_full = \"block\")"
        ) from None
