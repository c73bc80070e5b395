"""How a producer thread pulls items from the user's iterator: in slices pulled at C speed.

The slice grows (doubling up to FLUSH_AT, after three fast slices in a row) while items come
fast and the downstream is busy. A slice that took long to fill shrinks to what came in
SLOW_SLICE_S at its rate (one item for a slow or paced producer; a fast one whose thread was
merely preempted keeps most of it), and an idle downstream worker drops it to one item — so low
rates see no batching delay. A slice that came back short means the iterator is exhausted;
items `ctx.emit` flushed out of the slice while it was being pulled (`sent_early`) count as
pulled.

The cap is FLUSH_AT, or INLINE_FLUSH_AT while the next stage runs the slices in the producer's
thread (a one-thread stage, usually heading a fused chain, fusion.py, fast enough to call that
many items within its call budget of ~10 ms) in a pipeline without a disk buffer or item ids: no
queue holds them, and fewer slices cost less per item.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, Protocol

from pipelined.engine.fusion import runs_inline
from pipelined.engine.stage import StageServices

FLUSH_AT = 1024
INLINE_FLUSH_AT = 4096  # the cap while a memory pipeline's next stage runs in the producer's thread
SLOW_SLICE_S = 0.0002  # a slice that took longer than this to fill shrinks (to one item if slow)


class Puller(Protocol):
    """What `pull` reads of its producer stage (engine/producer.py's ProducerStage)."""

    stopping: bool
    target: Any  # router.Target: its `idle()`, and whether it runs the slices inline
    services: StageServices


def pull(
    items: Iterator[Any], buf: list[Any], flush: Callable[[], None], sent_early: list[int], stage: Puller
) -> None:
    """Move `items` into `buf` one slice at a time, calling `flush` after each, until the
    iterator is exhausted or `stage.stopping` turns true."""
    size = 1
    fast_slices = 0
    target = stage.target
    gate = stage.services.gate
    plain = gate.buffer is None and not gate.track_ids
    while not stage.stopping:
        sent_early[0] = 0
        began = time.perf_counter()
        buf.extend(islice(items, size))
        pulled = len(buf) + sent_early[0]
        if not pulled:
            return
        short = pulled < size
        took = time.perf_counter() - began
        if buf:
            flush()
        if short:
            return
        if target.idle():
            size, fast_slices = 1, 0
        elif took > SLOW_SLICE_S:
            # as many items as came in SLOW_SLICE_S: one for a slow or paced producer, most of
            # the slice for a fast one whose thread was merely preempted or switched out
            size, fast_slices = max(1, min(size, int(size * SLOW_SLICE_S / took))), 0
        else:
            fast_slices += 1
            cap = INLINE_FLUSH_AT if plain and runs_inline(target, INLINE_FLUSH_AT) else FLUSH_AT
            if fast_slices >= 3 and size < cap:
                size = min(2 * size, cap)
            elif size > cap:
                size = cap
