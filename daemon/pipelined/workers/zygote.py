"""The single-threaded zygote of a `fork_per_item` stage: it forks one child per item.

Started once per stage (never by forking the threaded daemon), it imports the callable,
instantiates a class and calls `setup()` once, so every child starts from that warm,
copy-on-write state. A child runs the after_fork hooks (pipeline, then stage), calls the item,
writes its row to a pipe and exits; at most `processes` children run at once. A child that dies
without a row fails its item with the way it died. On STOP: no new children, the running ones get
until the deadline, then SIGKILL; `close()` runs here, in the zygote.

Messages (see protocol.py): daemon → zygote `(BATCH, request, run_id, items_pickle)`,
`(ITEMWISE, request, run_id, [(item_pickle, type_name), ...])`, `(STOP, seconds)`;
zygote → daemon `(DONE, (request, rows), logs)`, `(LOAD_FAILED, request, logs)`, READY,
START_FAILED, CLOSED.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import selectors
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pipelined import tracing
from pipelined.workers import protocol
from pipelined.workers.calling import Row, StageCallable
from pipelined.workers.logbridge import LogBuffer
from pipelined.workers.setup import HookFailed, WorkerSetup, run_hooks
from pipelined.workers.worker_main import leave_stop_signals_to_the_daemon, start_stage

_PR_SET_PDEATHSIG = 1


@dataclass
class _Request:
    run_id: str | None
    rows: list[Row | None]
    missing: int
    trace: str | None = None  # the batch's traceparent (pipelined.tracing)
    item_ids: list[str | None] | None = None  # ctx.item_id of each item (a callable with ctx)
    attempt: int = 1  # ctx.attempt


@dataclass
class _Child:
    request: int
    index: int
    pid: int
    fd: int
    data: bytearray = field(default_factory=bytearray)


class Zygote:
    def __init__(self, conn: Connection, setup: WorkerSetup, shared: Any, processes: int) -> None:
        self.conn = conn
        self.setup = setup
        self.flags = memoryview(shared).cast("B").cast("q")
        self.processes = max(1, processes)
        self.logs = LogBuffer(setup.pipeline, setup.stage, setup.log_level)
        self.stage_callable: StageCallable | None = None
        self.requests: dict[int, _Request] = {}
        self.queue: deque[tuple[int, int, Any]] = deque()
        self.children: dict[int, _Child] = {}
        self.selector = selectors.DefaultSelector()
        self.stop_deadline: float | None = None

    def main(self) -> None:
        leave_stop_signals_to_the_daemon()
        self.logs.install()
        self.stage_callable = start_stage(self.conn, self.setup, self.logs, lambda: self.flags[1] == 1, ready=False)
        if self.stage_callable is None or not self._probe_after_fork():
            return
        self._send(protocol.READY, None)
        gc.freeze()  # children then never touch (copy) the pages of what setup() loaded to collect it
        self.selector.register(self.conn.fileno(), selectors.EVENT_READ, None)
        while self.stop_deadline is None or self.children:
            self._spawn_children()
            timeout = None if self.stop_deadline is None else max(0.0, self.stop_deadline - time.monotonic())
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    self._on_message()
                else:
                    self._on_child_output(key.data)
            if self.stop_deadline is not None and time.monotonic() >= self.stop_deadline:
                self._kill_children()
        self._finish()

    def _probe_after_fork(self) -> bool:
        """Fork once at start so a raising after_fork hook fails the stage's start."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            message = b""
            try:
                run_hooks(self.setup.after_fork, self.setup.python_path)
            except HookFailed as failure:
                message = protocol.dumps((failure.where, f"{type(failure.cause).__name__}: {failure.cause}"))
            finally:
                with contextlib.suppress(OSError):
                    os.write(write_fd, message)
                os._exit(0)
        os.close(write_fd)
        data = _read_all(read_fd)
        os.waitpid(pid, 0)
        if not data:
            return True
        where, error = pickle.loads(data)
        self._send(protocol.START_FAILED, (where, error, None))
        return False

    def _send(self, kind: str, payload: Any) -> None:
        self.conn.send_bytes(protocol.dumps((kind, payload, self.logs.take())))

    def _on_message(self) -> None:
        try:
            message = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self._begin_stop(0.0)  # the daemon went away
            return
        op = message[0]
        if op == protocol.STOP:
            self._begin_stop(message[1])
        elif op == protocol.BATCH:
            self._accept_batch(message[1], message[2], message[3])
        else:
            self._accept_itemwise(message[1], message[2], message[3])
        request = self.requests.get(message[1]) if len(message) > 4 else None
        if request is not None:
            request.trace = message[4]
            if len(message) > 6:
                request.item_ids, request.attempt = message[5], message[6]

    def _begin_stop(self, seconds: float) -> None:
        self.stop_deadline = time.monotonic() + seconds
        self.flags[1] = 1
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.conn.fileno())
        for request_id, _index, _item in self.queue:
            self._record(request_id, _index, _error_row(f"WorkerStopped: stage {self.setup.stage!r} is stopping"))
        self.queue.clear()

    def _accept_batch(self, request_id: int, run_id: str | None, data: bytes) -> None:
        try:
            items = pickle.loads(data)
        except Exception:
            self._send(protocol.LOAD_FAILED, request_id)
            return
        self.requests[request_id] = _Request(run_id, [None] * len(items), len(items))
        self.queue.extend((request_id, index, item) for index, item in enumerate(items))

    def _accept_itemwise(self, request_id: int, run_id: str | None, pickles: list[tuple[bytes, str]]) -> None:
        self.requests[request_id] = _Request(run_id, [None] * len(pickles), len(pickles))
        for index, (data, type_name) in enumerate(pickles):
            try:
                self.queue.append((request_id, index, pickle.loads(data)))
            except Exception as exc:
                self._record(request_id, index, _error_row(
                    f"UnpicklingError: stage {self.setup.stage!r}: item of type {type_name} cannot be "
                    f"unpickled in the worker process: {type(exc).__name__}: {exc}"))

    def _spawn_children(self) -> None:
        while self.queue and len(self.children) < self.processes and self.stop_deadline is None:
            request_id, index, item = self.queue.popleft()
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                request = self.requests[request_id]
                self._child(request, index, item, write_fd)
            os.close(write_fd)
            child = _Child(request_id, index, pid, read_fd)
            self.children[read_fd] = child
            self.selector.register(read_fd, selectors.EVENT_READ, child)

    def _child(self, request: _Request, index: int, item: Any, write_fd: int) -> None:
        run_id = request.run_id
        ids = None if request.item_ids is None else [request.item_ids[index]]
        try:
            _die_with_parent()
            tracing.attach_traceparent(request.trace)  # this process ends after the one call
            self.logs.take()  # the zygote's records stay with the zygote
            self.logs.run = run_id
            try:
                run_hooks(self.setup.after_fork, self.setup.python_path)
                assert self.stage_callable is not None
                rows = self.stage_callable.run_batch(run_id, [item], [0, 0], _no_flush, float("inf"), ids,
                                                     request.attempt)  # fmt: skip
            except HookFailed as failure:
                rows = [_error_row(str(failure))]
            data = protocol.encode_rows(protocol.DONE, rows, self.logs.take(), self.setup.stage)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
        finally:
            os._exit(0)

    def _on_child_output(self, child: _Child) -> None:
        chunk = os.read(child.fd, 1 << 16)
        if chunk:
            child.data += chunk
            return
        self.selector.unregister(child.fd)
        os.close(child.fd)
        del self.children[child.fd]
        _, status = os.waitpid(child.pid, 0)
        self._record(child.request, child.index, self._child_row(child, status))

    def _child_row(self, child: _Child, status: int) -> Row:
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and child.data:
            _kind, rows, logs = pickle.loads(bytes(child.data))
            self.logs.add(logs)
            return rows[0]
        exitcode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        how = protocol.describe_exit(exitcode)
        return _error_row(f"WorkerDied: worker died: {how} (pid {child.pid}) (stage {self.setup.stage!r})")

    def _record(self, request_id: int, index: int, row: Row) -> None:
        request = self.requests[request_id]
        request.rows[index] = row
        request.missing -= 1
        if request.missing == 0:
            del self.requests[request_id]
            self._send(protocol.DONE, (request_id, request.rows))

    def _kill_children(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

    def _finish(self) -> None:
        error: str | None = None
        try:
            if self.stage_callable is not None:
                self.stage_callable.close()
        except Exception as exc:
            error = f"close() failed: {type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError, ValueError):
            self._send(protocol.CLOSED, error)


def zygote_main(conn: Connection, shared: Any, setup: WorkerSetup, processes: int = 1) -> None:
    Zygote(conn, setup, shared, processes).main()


def _error_row(error: str) -> Row:
    return [], [], False, error, None, 0.0


def _no_flush(rows: list[Row]) -> None:
    pass


def _read_all(fd: int) -> bytes:
    data = bytearray()
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    os.close(fd)
    return bytes(data)


def _die_with_parent() -> None:
    """SIGKILL this child if the zygote dies, so no item child outlives its stage."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
