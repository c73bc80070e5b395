"""The code running in a pool worker process: hooks, setup, then batches until told to stop.

Start: after_fork hooks (pipeline, then stage), import the callable, instantiate a class and call
its `setup()`; reply READY or START_FAILED. Then answer every BATCH with its rows (a ROWS part
every FLUSH_EVERY seconds for long batches, then DONE). On STOP — or when the daemon's end of
the pipe closes — call `close()` and exit. `progress[0]` is the index of the item being called
(-1 between items) so that the daemon can charge a crash to exactly that item; `progress[1]`
becomes 1 when the daemon is stopping the stage (`ctx.stopping`).
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

from pipelined import tracing
from pipelined.workers import protocol
from pipelined.workers.calling import Compact, Row, StageCallable
from pipelined.workers.logbridge import LogBuffer
from pipelined.workers.producing import run_producer
from pipelined.workers.setup import HookFailed, WorkerSetup, add_python_path, run_hooks

FLUSH_EVERY = 0.05


def leave_stop_signals_to_the_daemon() -> None:
    """Ctrl-C in a terminal and systemd's SIGTERM to the whole cgroup reach workers too; the
    daemon drains them (close() runs) and SIGKILLs what its deadline leaves. A no-op handler,
    not SIG_IGN, so processes the user's code execs still get default signal handling."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore_signal)


def _ignore_signal(signum: int, frame: Any) -> None:
    pass


def worker_main(conn: Connection, shared: Any, setup: WorkerSetup) -> None:
    leave_stop_signals_to_the_daemon()
    progress = memoryview(shared).cast("B").cast("q")
    logs = LogBuffer(setup.pipeline, setup.stage, setup.log_level)
    logs.install()
    tracing.configure(announce=False)  # user code's spans here go where the daemon's go (OTEL_*)
    stage_callable = start_stage(conn, setup, logs, lambda: progress[1] == 1)
    if stage_callable is None:
        return
    gc.freeze()  # what setup() loaded is long-lived: keep full collections from walking it per batch
    serve(conn, stage_callable, setup, logs, progress)


def start_stage(
    conn: Connection, setup: WorkerSetup, logs: LogBuffer, stopping: Any, ready: bool = True
) -> StageCallable | None:
    """Hooks, import, instance, setup(); replies READY (and returns it) or START_FAILED.

    With `ready=False` (the fork_per_item zygote) the after_fork hooks are not run here and READY
    is left to the caller."""
    add_python_path(setup.python_path)
    where = f"import of {setup.call!r}"
    try:
        if ready:
            run_hooks(setup.after_fork, setup.python_path)
        stage_callable = StageCallable(setup, stopping)
        where = "setup()"
        stage_callable.setup()
    except HookFailed as failure:
        _reply_start_failed(conn, failure.where, failure.cause, logs)
        return None
    except BaseException as exc:
        _reply_start_failed(conn, where, exc, logs)
        return None
    if ready:
        conn.send_bytes(protocol.dumps((protocol.READY, None, logs.take())))
    return stage_callable


def _reply_start_failed(conn: Connection, where: str, exc: BaseException, logs: LogBuffer) -> None:
    text = "".join(traceback.format_exception(exc))
    conn.send_bytes(protocol.dumps((protocol.START_FAILED, (where, f"{type(exc).__name__}: {exc}", text), logs.take())))


def serve(conn: Connection, stage_callable: StageCallable, setup: WorkerSetup, logs: LogBuffer, progress: Any) -> None:
    def flush(rows: list[Row] | Compact) -> None:
        conn.send_bytes(protocol.encode_rows(protocol.ROWS, rows, logs.take(), setup.stage))

    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            break  # the daemon went away: close and exit rather than linger as an orphan
        try:
            message = pickle.loads(data)
        except Exception as exc:
            conn.send_bytes(protocol.dumps((protocol.LOAD_FAILED, f"{type(exc).__name__}: {exc}", logs.take())))
            continue
        op = message[0]
        if op == protocol.STOP:
            break
        if op == protocol.CANCEL:
            continue  # a late cancel of a producer run that had already finished
        logs.run = message[1]
        if op == protocol.PRODUCE:
            run_producer(conn, stage_callable, message[1], message[2], logs, setup.stage_names)
            logs.run = None
            continue
        rows: list[Row] | Compact
        # optional last fields: the batch's traceparent, then ctx.item_id of each item and ctx.attempt
        traced = tracing.attach_traceparent(message[3]) if len(message) > 3 and message[3] else None
        item_ids, attempt = (message[4], message[5]) if len(message) > 5 else (None, 1)
        try:
            if op == protocol.BATCH and stage_callable.fast is not None:
                rows = stage_callable.run_fast_batch(message[2], progress, flush, FLUSH_EVERY)
            elif op == protocol.BATCH:
                rows = stage_callable.run_batch(message[1], message[2], progress, flush, FLUSH_EVERY, item_ids, attempt)
            else:
                rows = _run_itemwise(stage_callable, message[1], message[2], setup.stage, progress, flush,
                                     item_ids, attempt)  # fmt: skip
        finally:
            tracing.detach(traced)
        logs.run = None
        conn.send_bytes(protocol.encode_rows(protocol.DONE, rows, logs.take(), setup.stage))
    _close(conn, stage_callable, logs)


def _run_itemwise(
    stage_callable: StageCallable,
    run_id: str | None,
    pickles: list[tuple[bytes, str]],
    stage: str,
    progress: Any,
    flush: Any,
    item_ids: list[str | None] | None = None,
    attempt: int = 1,
) -> list[Row]:
    """Unpickle items one by one: the ones that fail get an error row, the rest are called."""
    rows: list[Row] = []
    for index, (data, type_name) in enumerate(pickles):
        try:
            item = pickle.loads(data)
        except Exception as exc:
            rows.append(([], [], False, f"UnpicklingError: stage {stage!r}: item of type {type_name} cannot be "
                         f"unpickled in the worker process: {type(exc).__name__}: {exc}", None, 0.0))
            continue
        progress[0] = index
        ids = None if item_ids is None else [item_ids[index]]
        rows.extend(stage_callable.run_batch(run_id, [item], _Offset(progress, index), flush, float("inf"), ids, attempt))
    progress[0] = -1
    return rows


class _Offset:
    """progress[0] = base + i, so an item-by-item batch reports its real index."""

    def __init__(self, progress: Any, base: int) -> None:
        self.progress = progress
        self.base = base

    def __setitem__(self, key: int, value: int) -> None:
        self.progress[key] = self.base if value == -1 else self.base + value


def _close(conn: Connection, stage_callable: StageCallable, logs: LogBuffer) -> None:
    error: str | None = None
    try:
        stage_callable.close()
    except Exception as exc:
        error = f"close() failed: {type(exc).__name__}: {exc}"
    tracing.shutdown()  # export what user code's spans left buffered (a worker exits without atexit)
    with contextlib.suppress(OSError, ValueError):
        conn.send_bytes(protocol.dumps((protocol.CLOSED, error, logs.take())))
