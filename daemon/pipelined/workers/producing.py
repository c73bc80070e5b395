"""A producer run inside a worker process: items stream back to the daemon in chunks.

The producer runs in the worker's main thread; a flusher thread sends what it yielded at least
every FLUSH_EVERY seconds (so a slow producer's items are not held back), and at once when a
chunk reaches CHUNK items. A full pipe blocks the producer: back-pressure from the daemon. The
daemon can CANCEL (its run is being drained): the producer is closed at its next `yield`.
Replies: `(ROWS, (items, routed), logs)` chunks, then `(DONE, (items, routed, error), logs)`
where error is None or `(text, traceback)`.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from pipelined.workers import protocol
from pipelined.workers.calling import StageCallable
from pipelined.workers.logbridge import LogBuffer
from pipelined.workers.setup import is_emit_target

CHUNK = 256
FLUSH_EVERY = 0.01


class _Outbox:
    def __init__(self, conn: Connection, logs: LogBuffer, stage: str) -> None:
        self.conn = conn
        self.logs = logs
        self.stage = stage
        self.items: list[Any] = []
        self.routed: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.cancelled = False
        self.finished = threading.Event()

    def flush(self, kind: str = protocol.ROWS, error: tuple[str, str | None] | None = None) -> None:
        with self.lock:
            items, self.items = self.items, []
            routed, self.routed = self.routed, []
            if kind == protocol.ROWS and not items and not routed:
                return
            payload: tuple[Any, ...] = (items, routed) if kind == protocol.ROWS else (items, routed, error)
            try:
                data = protocol.dumps((kind, payload, self.logs.take()))
            except Exception as exc:
                bad = protocol.first_unpicklable([*items, *(item for _, item in routed)])
                value, cause = bad if bad is not None else (payload, exc)
                text = protocol.pickle_error(self.stage, "produced item", value, cause)
                data = protocol.dumps((protocol.DONE, ([], [], (text, None)), []))
                self.cancelled = True
            self.conn.send_bytes(data)
            if not self.cancelled and kind == protocol.ROWS and self.conn.poll():
                message = pickle.loads(self.conn.recv_bytes())
                self.cancelled = message[0] == protocol.CANCEL

    def flush_periodically(self) -> None:
        while not self.finished.wait(FLUSH_EVERY):
            try:
                self.flush()
            except (OSError, ValueError):
                return


def run_producer(conn: Connection, stage_callable: StageCallable, run_id: str, call_args: dict[str, Any],
                 logs: LogBuffer, targets: frozenset[str]) -> None:
    outbox = _Outbox(conn, logs, stage_callable.stage)

    def emit_to(stage: str, item: Any) -> None:
        if not is_emit_target(stage, targets):
            raise ValueError(f"ctx.emit_to: stage {stage_callable.stage!r} routes to unknown stage {stage!r}")
        with outbox.lock:
            outbox.routed.append((stage, item))

    flusher = threading.Thread(target=outbox.flush_periodically, daemon=True)
    flusher.start()
    error: tuple[str, str | None] | None = None
    items: Any = None
    try:
        items = stage_callable.invoker.iterate_producer(call_args, run_id, emit_to)
        for value in items:
            with outbox.lock:
                outbox.items.append(value)
                full = len(outbox.items) >= CHUNK
            if full:
                outbox.flush()
            if outbox.cancelled:
                break
        items.close()
    except Exception as exc:
        error = (f"{type(exc).__name__}: {exc}", traceback.format_exc())
        with contextlib.suppress(Exception):
            items.close()
    finally:
        outbox.finished.set()
        flusher.join()
    outbox.flush(protocol.DONE, error)  # also the answer to a CANCEL
