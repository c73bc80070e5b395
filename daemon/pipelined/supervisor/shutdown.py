"""The daemon's stop: every pipeline drained in parallel, except that a pipeline waits for the
pipelines that link to it (so their last items still get in), at most as long as the longest
drain; the links written in `to` have no loop (checked at load), so nobody waits in a circle."""

from __future__ import annotations

import logging
import threading
import time

from pipelined.supervisor import linkplan
from pipelined.supervisor.slot import PipelineSlot

log = logging.getLogger("pipelined.supervisor")


def drain_all(slots: list[PipelineSlot], longest_drain: float) -> None:
    """Drain every slot (leftovers dead-lettered "shutdown"); returns when all are done or after
    about twice the longest drain plus 30 s."""
    drained = {slot.name: threading.Event() for slot in slots}
    senders = linkplan.upstream_pipelines(slots)
    wait_until = time.monotonic() + longest_drain
    threads = []
    for slot in slots:
        after = [drained[name] for name in sorted(senders.get(slot.name, ())) if name in drained]
        thread = threading.Thread(
            target=_drain_for_stop, args=(slot, after, drained[slot.name], wait_until), name=f"drain-{slot.name}",
            daemon=True,
        )  # fmt: skip
        threads.append(thread)
        thread.start()
    deadline = wait_until + longest_drain + 30
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _drain_for_stop(slot: PipelineSlot, after: list[threading.Event], done: threading.Event, until: float) -> None:
    for sender in after:
        sender.wait(max(0.0, until - time.monotonic()))
    try:
        with slot.lock:
            slot.drain_runtime()
            slot.book.close_buffer()  # what is queued for the disk buffer is committed first
    except Exception:  # noqa: BLE001 - keep draining the others
        log.exception("%s: drain at stop failed", slot.name, extra={"pipeline": slot.name})
    finally:
        done.set()
