"""Outputs of finished items that would otherwise wait for the rest of their chunk.

A thread stage calls a chunk's items one after another and routes their outputs when the chunk
is done. When one call is slow (an item that takes seconds after a run of fast ones), the
outputs of the items before it would wait for it. So while a worker is inside a chunk, its
`InProgress` slot shows the results so far; one daemon-wide watcher thread looks at the busy
slots every `POLL_S` and, for a chunk older than that, routes the outputs already there — only
when every downstream queue has room right now (it never waits, never runs a stage inline), so
the worker, which routes the rest when the chunk ends, keeps the order and the back-pressure.

At the drain deadline a chunk still in a worker's hands is taken over: the slot tells which of
its items are done with every output routed (`done`), and only the others are dead-lettered
(chunkcalls.py, `ChunkCalls.abandon`).

The watcher sleeps while no chunk is in progress; a worker starting one wakes it (one attribute
read per chunk while it is awake).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pipelined.engine")

POLL_S = 0.005  # outputs of finished items wait at most ~2 polls: about the stage's call budget


class InProgress:
    """One worker's chunk in progress: its results so far and how many were routed early."""

    __slots__ = (
        "flush", "run", "results", "raw", "sent", "early", "began", "active", "lock", "lineage", "ids", "chunk",
        "outcome", "ends", "done",
    )

    def __init__(self, flush: Callable[[InProgress], None]) -> None:
        self.flush = flush  # the stage's: route results[sent:] if the queues have room
        self.run: Any = None
        self.results: list[Any] = []
        self.raw = True  # results are map() results (None: filtered; markers for failures)
        self.sent = 0  # results[:sent] were looked at (and their outputs routed) by the watcher
        self.early = 0  # outputs the watcher routed
        self.began = 0.0
        self.active = False
        self.lock = threading.Lock()
        self.lineage: Any = None  # the chunk's (lineage.py): early outputs derive from it too
        self.ids: Any = None  # item numbers (ctx.item_id) when tracked: the chunk's (raw), else the outputs'
        # what the drain deadline needs to tell the chunk's done items from the rest (abandon):
        self.chunk: Any = None  # the chunk, until its worker has completed it
        self.outcome: Any = None  # its Outcome (not raw): failures, filtered
        self.ends: list[tuple[int, int, int]] = []  # not raw: per item called, (len(results), filtered, failures)
        self.done = 0  # the chunk's first `done` items were called and all their outputs routed

    def start(self, chunk: Any, results: list[Any], *, raw: bool, ids: Any = None, outcome: Any = None) -> None:
        """ids: with raw results, the chunk's item numbers (one per result); otherwise a list the
        worker extends with each output's number BEFORE it appends the outputs (and, after them,
        appends the item's entry to `ends`)."""
        with self.lock:
            self.chunk = chunk
            self.run = chunk.run
            self.lineage = chunk.lineage
            self.ids = ids
            self.outcome = outcome
            self.ends = []
            self.done = 0
            self.results = results
            self.raw = raw
            self.sent = 0
            self.early = 0
            self.began = time.perf_counter()
            self.active = True
        if WATCHER.idle:
            WATCHER.wake()

    def finish(self) -> tuple[int, int]:
        """The chunk is called: (results the watcher took, outputs it routed). After this the
        watcher leaves the slot alone; the rest stays (for the drain deadline) until `clear`."""
        with self.lock:
            self.active = False
            return self.sent, self.early

    def clear(self) -> None:
        """The chunk is completed (or taken over by the drain deadline): keep nothing of it."""
        with self.lock:
            self.active = False
            self.chunk = self.outcome = self.run = self.lineage = self.ids = None
            self.results = []
            self.ends = []


class _Watcher:
    def __init__(self) -> None:
        self.idle = True
        self._slots: set[InProgress] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def register(self, slot: InProgress) -> None:
        with self._cond:
            self._slots.add(slot)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pipelined-late-outputs", daemon=True)
                self._thread.start()

    def unregister(self, slot: InProgress) -> None:
        with self._cond:
            self._slots.discard(slot)

    def wake(self) -> None:
        with self._cond:
            self.idle = False
            self._cond.notify()

    def _busy(self) -> list[InProgress]:
        return [slot for slot in self._slots if slot.active]

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    # a worker that reads idle == False made its slot active before this store,
                    # so the check below sees it; one that reads True wakes us
                    self.idle = True
                    if self._busy():
                        break
                    self._cond.wait()
                self.idle = False
            time.sleep(POLL_S)
            with self._cond:
                busy = self._busy()
            now = time.perf_counter()
            for slot in busy:
                if slot.active and now - slot.began >= POLL_S:
                    try:
                        slot.flush(slot)
                    except Exception:  # noqa: BLE001 - best effort: the worker routes them anyway
                        log.exception("routing outputs of finished items early failed")


WATCHER = _Watcher()
