"""Retries on a timer: a failed item waits its backoff here, never in its stage's workers.

One thread per runtime holds a heap of (due time, chunk, queue); at the due time the chunk is
put back into its stage's input queue. The thread starts with the first retry: a pipeline that
never retries (most of a thousand) costs no thread. While it waits it counts against that queue's bound
(`StageQueue.waiting`), so a failing stage's retry backlog holds its senders back.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable

from pipelined.engine.queues import Chunk, QueueAbandoned, StageQueue

log = logging.getLogger("pipelined.engine")

BACKOFF_CAP = 30.0


def backoff_delay(base: float, attempt: int) -> float:
    """Wait before retry number `attempt` (1-based): base * 2^(attempt-1), capped, ±25 % jitter."""
    delay = min(BACKOFF_CAP, base * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.75, 1.25)


class RetryTimer:
    def __init__(self, name: str, on_abandoned: Callable[[Chunk, StageQueue], None]) -> None:
        self._on_abandoned = on_abandoned
        self._heap: list[tuple[float, int, Chunk, StageQueue]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._started = False
        self._thread = threading.Thread(target=self._loop, name=f"{name}:retry", daemon=True)

    def start(self) -> None:
        """Ready for retries (the thread itself starts with the first one)."""

    def schedule(self, chunk: Chunk, queue: StageQueue, delay: float) -> None:
        queue.add_waiting(len(chunk.items))  # counts against the stage's queue bound meanwhile
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), chunk, queue))
            self._cond.notify()
            if not self._started and not self._stopped:
                self._started = True
                self._thread.start()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, chunk, queue = heapq.heappop(self._heap)
            try:
                queue.put(chunk, force=True, retry=True)
            except QueueAbandoned:
                try:
                    self._on_abandoned(chunk, queue)  # the drain deadline passed meanwhile
                except BaseException:
                    log.exception("dead-lettering a retry after the drain deadline failed")

    def take_all(self) -> list[tuple[Chunk, StageQueue]]:
        """Drain deadline: everything still waiting (to be dead-lettered), with its queue."""
        with self._cond:
            left = [(entry[2], entry[3]) for entry in self._heap]
            self._heap.clear()
        for chunk, queue in left:
            queue.add_waiting(-len(chunk.items))
        return left

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
