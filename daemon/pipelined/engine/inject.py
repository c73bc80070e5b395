"""Injected items (a trigger's `items`, a link's delivery) into a stage: all of them or none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelined.engine.queues import QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.router import Target, inject
from pipelined.engine.runs import Run
from pipelined.errors import QueueFull, Unavailable

INJECT_TIMEOUT = 5.0


def put_all(
    pipeline: str, stage: str, entrance: Target, queues: Mapping[str, StageQueue], run: Run, items: list[Any]
) -> None:
    """Hand `items` to `stage` (its queue, or every queue of a nested pipeline they reach).

    The caller counted them in flight for `run` while they are handed over; on success that
    count ends here. QueueFull when an `on_full = "reject"` queue has no room for all of them,
    Unavailable when a `block` queue had none within INJECT_TIMEOUT or the drain deadline
    passed meanwhile: nothing was accepted then, and the caller's count stands."""
    where = f"pipeline {pipeline!r}, stage {stage!r}"
    n = len(items)
    try:  # into every queue they reach (a nested pipeline's children), or into none
        finished = inject(entrance, run, items, INJECT_TIMEOUT)
    except QueueRejected as exc:
        queue = queues[str(exc)]
        whose = "its queue" if queue.stage == stage else f"the queue of stage {queue.stage!r}"
        raise QueueFull(
            f"{where}: {whose} has no room for {n} items "
            f"({queue.depth}/{queue.capacity} queued, on_full = \"reject\")"
        ) from None
    except TimeoutError as exc:
        whose = "" if str(exc) == stage else f" into stage {str(exc)!r}"
        raise Unavailable(
            f"{where}: could not enqueue {n} items{whose} within {INJECT_TIMEOUT:g} s "
            f"(queue full, on_full = \"block\")"
        ) from None
    except QueueAbandoned:  # the drain deadline passed while it waited for room: none got in
        raise Unavailable(
            f"{where}: the pipeline drained before there was room for {n} items; none was accepted"
        ) from None
    run.settle(leave=n, finished=finished)
