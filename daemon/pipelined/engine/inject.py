"""One delivery of items over a link into a linked run: all of them or none.

Like a trigger's items (triggers.py's `inject_items`, durable.py's `inject_durably`): numbered within
their run (`ctx.item_id`: the n-th item the linked run took), written to the disk buffer first
when the pipeline has one (an item that crosses a link counts as accepted once it is on disk),
then handed to every queue they reach, all or none. Any refusal leaves the run as it was.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipelined.config.spec import PipelineSpec
from pipelined.engine.buffer_writer import BufferFailed
from pipelined.engine.disk_buffer import BufferUnavailable
from pipelined.engine.entry import EntryGate
from pipelined.engine.queues import QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.router import Target, inject
from pipelined.engine.runs import Run
from pipelined.errors import BadRequest, QueueFull, Unavailable

INJECT_TIMEOUT = 5.0  # as for a trigger: a `block` queue (or the disk) has this long to take them


class InjectHost(Protocol):
    """What a delivery needs of its runtime (`PipelineRuntime`)."""

    spec: PipelineSpec
    gate: EntryGate
    queues: dict[str, StageQueue]


def deliver_linked(
    rt: InjectHost, run: Run, stage: str, items: list[Any], first: int, entrance: Target, timeout: float = INJECT_TIMEOUT
) -> None:
    """Items `first`, `first + 1`, ... of the linked run `run`, into `stage` (its `entrance`).

    BadRequest (an item the disk buffer cannot store), QueueFull (an `on_full = "reject"` queue
    without room for all), Unavailable (a `block` queue or the disk without room in time, the
    drain deadline): nothing was accepted then, and `run`'s counts are what they were."""
    where = f"pipeline {rt.spec.name!r}, stage {stage!r}"
    gate = rt.gate
    try:
        admission = gate.admit(run, stage, "in", items, first, refuse=True)
    except (BufferUnavailable, BufferFailed) as exc:
        raise Unavailable(f"{where}: {exc}") from None
    lineage = admission.lineage
    if admission.refused:
        gate.cancel(lineage)
        index, _, text = admission.refused[0]
        raise BadRequest(f"{where}: item {index} of {len(items)}: {text}")
    if admission.commit is not None and not admission.commit.wait(timeout):
        gate.cancel(lineage)
        why = gate.buffer.error if gate.buffer is not None else None
        raise Unavailable(
            f"{where}: the disk buffer did not store {len(items)} items within {timeout:g} s" + (f": {why}" if why else "")
        )
    kept, ids, n = admission.items, admission.ids, len(admission.items)
    run.settle(produced=n, enter=n, lineage=lineage)  # in flight while they are handed over
    try:  # into every queue they reach (a nested pipeline's children), or into none
        finished = inject(entrance, run, kept, timeout, lineage, ids)
    except (QueueRejected, TimeoutError, QueueAbandoned) as exc:
        run.settle(produced=-n, leave=n, lineage=lineage)
        gate.cancel(lineage)
        raise _refusal(exc, rt.queues, where, stage, n, timeout) from None
    run.settle(leave=n, finished=finished, lineage=lineage)
    if lineage is not None:
        lineage.seal()


def _refusal(
    exc: Exception, queues: dict[str, StageQueue], where: str, stage: str, n: int, timeout: float
) -> Exception:
    if isinstance(exc, QueueRejected):
        queue = queues[str(exc)]
        whose = "its queue" if queue.stage == stage else f"the queue of stage {queue.stage!r}"
        return QueueFull(
            f'{where}: {whose} has no room for {n} items ({queue.depth}/{queue.capacity} queued, on_full = "reject")'
        )
    if isinstance(exc, TimeoutError):
        whose = "" if str(exc) == stage else f" into stage {str(exc)!r}"
        return Unavailable(
            f'{where}: could not enqueue {n} items{whose} within {timeout:g} s (queue full, on_full = "block")'
        )
    return Unavailable(f"{where}: the pipeline drained before there was room for {n} items; none was accepted")
