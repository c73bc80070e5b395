"""Sending items to a stage of another pipeline (a link), without knowing the other pipeline.

The engine runs one pipeline; who runs the others is the supervisor's business. So a runtime is
handed a `LinkSink` (the supervisor's `pipelined.supervisor.links.LinkRouter`) and wraps it, per
link target, in a `LinkTarget`: a router target like a stage's queue. Its `send` returns once
the other pipeline has *accepted* the items (they count as finished for the sending run) or
raises `LinkRefused` with the error that attempt fails with (e.g. "pipeline 'billing' is not
running"): like a full `on_full = "reject"` queue, the attempt is retried, then dead-lettered.

    sink.deliver(LinkSource("ingest", "r-000007", None), "archive/store", [item, ...])

A runtime built without a sink (tests, benchmarks) refuses every link (`NoLinks`).

With two links or more in one send (a broadcast, a round_robin over links), one may take its
items and another refuse them: what was taken cannot be taken back, so retrying the whole
attempt would send it again. The router delivers everything else and raises `PartlySent`;
the sender then retries only the refused parts, in place (`deliver_rest`: `max_retries` times
with `retry_backoff`), and dead-letters what is still refused — each item crosses once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipelined.config.linkref import split_link
from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import QueueRejected
from pipelined.engine.retry import backoff_delay
from pipelined.engine.router import ForwardTarget, Ids, PartlySent
from pipelined.engine.runs import Run


class LinkRefused(QueueRejected):
    """The other pipeline did not take the items; `text` is the error the attempt fails with."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def not_running(pipeline: str) -> LinkRefused:
    return LinkRefused(f"pipeline {pipeline!r} is not running")


@dataclass(frozen=True)
class LinkSource:
    """The run the items come from: the target's linked run records it as its `parent`."""

    pipeline: str
    run: str
    priority: int | None = None  # the sending run's: the linked run takes it over
    # subscribes a callback to the end of the sending run (`Run.on_end`): the linked run over
    # there takes items until then; None: it ends whenever nothing of it is in flight
    on_end: Callable[[Callable[[], None]], None] | None = None

    @property
    def parent(self) -> str:
        return f"{self.pipeline}/{self.run}"


class LinkSink(Protocol):
    """Delivers items to another pipeline (implemented by the supervisor).

    `deliver` returns once the stage `target` ("pipeline/stage") accepted every item, as part of
    the linked run of `source`; otherwise it raises LinkRefused. It may wait (for a reload of
    the target, or for room in its queue) but never holds a lock of the sending pipeline."""

    def deliver(self, source: LinkSource, target: str, items: list[Any]) -> None: ...


class NoLinks:
    """No other pipeline can be reached: every delivery is refused."""

    def deliver(self, source: LinkSource, target: str, items: list[Any]) -> None:
        raise not_running(target.split("/", 1)[0])


class LinkTarget(ForwardTarget):
    """Where a stage's items for `target` go: the sink, once per chunk (or per planned send)."""

    def __init__(self, sink: LinkSink, pipeline: str, target: str) -> None:
        self.sink = sink
        self.pipeline = pipeline
        self.target = target

    def send(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> int:
        if not items:
            return 0
        source = LinkSource(self.pipeline, run.id, run.priority, run.on_end)
        self.sink.deliver(source, self.target, items)
        return len(items)  # accepted over there: finished for this run

    def idle(self) -> bool:
        return True


class LinkTargets:
    """The LinkTarget of every "pipeline/stage" one runtime sends to, made on first use."""

    def __init__(self, sink: LinkSink, pipeline: str) -> None:
        self.sink = sink
        self.pipeline = pipeline
        self._made: dict[str, LinkTarget] = {}

    def target(self, name: str) -> LinkTarget:
        found = self._made.get(name)
        if found is None:  # two threads may both make one: either does
            found = self._made[name] = LinkTarget(self.sink, self.pipeline, name)
        return found

    def resolve(self, name: str) -> tuple[LinkTarget | None, str]:
        """(its LinkTarget, name) for another pipeline's stage; (None, the local stage name) for
        a plain name or "<this pipeline>/<stage>"."""
        link = split_link(name)
        if link is None:
            return None, name
        if link[0] == self.pipeline:
            return None, link[1]
        return self.target(name), name


GiveUp = Callable[[list[Any], int, QueueRejected], None]  # (items, attempts, last refusal)


def deliver_rest(
    partly: PartlySent,
    run: Run,
    lineage: Lineage | None,
    retries: int,
    backoff: float,
    stopping: Callable[[], bool],
    give_up: GiveUp,
) -> int:
    """Retry, in place, the parts of a send that links refused after another link had taken
    its part (`PartlySent`); hand what is still refused after `retries` retries (or once the
    pipeline stops) to `give_up` (the sender dead-letters it). The send's finished count."""
    finished = partly.finished
    for leaf, items, ids, refusal in partly.rest:
        attempts, last = 1, refusal
        while True:
            if attempts > retries or stopping():
                give_up(items, attempts, last)
                break
            time.sleep(backoff_delay(backoff, attempts))
            attempts += 1
            try:
                finished += leaf.send(run, items, lineage, ids)
                break
            except QueueRejected as exc:
                last = exc
    return finished
