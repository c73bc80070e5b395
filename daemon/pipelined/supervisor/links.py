"""Delivery over links: the `LinkSink` every runtime is handed (`pipelined.engine.links`).

    router = LinkRouter(lookup)          # lookup(name) -> the PipelineSlot, or None
    router.deliver(LinkSource("ingest", "r-000007"), "archive/store", items)

A delivery looks up the target pipeline's slot, waits at its swap gate like a trigger does
(at most `SWAP_WAIT` s while a reload swaps versions or a new pipeline starts), and hands the
items to the running version (`PipelineRuntime.accept_linked`), which adds them to the linked
run of the sending run and honours the target stage's `on_full` (block up to 5 s, or reject).
Whatever keeps the items out (no such pipeline, drained, draining, failed, disabled, still
swapping after the wait) raises `LinkRefused` — with error "pipeline 'billing' is not running",
or the target's own reason (no such stage, queue full) — and the sending attempt fails.

Locks: a delivery runs in a thread of the sending pipeline and takes only the target's gate
and the target runtime's own short locks; it never holds the slots lock or a slot's lifecycle
lock, so a reload, drain or removal of either pipeline never waits for it (nor it for them,
beyond the gate's bounded wait).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipelined.engine.links import LinkRefused, LinkSource, not_running
from pipelined.errors import Conflict, RequestError, Unavailable
from pipelined.supervisor.slot import SWAP_WAIT, PipelineSlot

SlotLookup = Callable[[str], PipelineSlot | None]


class LinkRouter:
    def __init__(self, lookup: SlotLookup, swap_wait: float = SWAP_WAIT) -> None:
        self.lookup = lookup
        self.swap_wait = swap_wait

    def deliver(self, source: LinkSource, target: str, items: list[Any]) -> None:
        pipeline, _, stage = target.partition("/")
        deadline = time.monotonic() + self.swap_wait
        while True:
            slot = self.lookup(pipeline)
            if slot is None:
                raise not_running(pipeline)
            try:
                runtime = slot.current_runtime(max(0.0, deadline - time.monotonic()))
            except (Conflict, Unavailable):  # no running version, or the swap took too long
                raise not_running(pipeline) from None
            try:
                runtime.accept_linked(stage, source.parent, items, source.priority, source.on_end)
                return
            except Conflict:
                # this version stopped taking items (drained, or draining for a swap that has
                # begun since the gate): wait for the new version while a swap is under way
                if (slot.swapping or slot.runtime is not runtime) and time.monotonic() < deadline:
                    time.sleep(0.005)
                    continue
                raise not_running(pipeline) from None
            except RequestError as exc:  # no such stage, a producer, its queue full, ...
                raise LinkRefused(exc.detail) from None
