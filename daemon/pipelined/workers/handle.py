"""The daemon's side of one worker process: launch, wait for READY, exchange messages, stop.

`multiprocessing` contexts do the launching (fork / forkserver / spawn). `mp_context(method)`
counts the stages using the forkserver and spawn helpers; when the last one stops, the forkserver
and resource-tracker helper processes are stopped too, so a drained daemon has no children left.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from typing import Any, cast

from pipelined.workers import protocol
from pipelined.workers.logbridge import replay
from pipelined.workers.setup import WorkerSetup
from pipelined.workers.worker_main import worker_main

log = logging.getLogger("pipelined.workers")
_helpers_lock = threading.Lock()
_helper_users = 0


WorkerContext = ForkContext | ForkServerContext | SpawnContext


def acquire_context(method: str) -> WorkerContext:
    """The context of a start method (\"fork\", \"forkserver\" or \"spawn\", as config checked)."""
    global _helper_users
    context = cast(WorkerContext, multiprocessing.get_context(method))
    if method != "fork":
        with _helpers_lock:
            _helper_users += 1
        if method == "forkserver":
            context.set_forkserver_preload(["pipelined.workers.worker_main"])
    return context


def release_context(method: str) -> None:
    """Stop the forkserver and resource tracker once no stage uses them any more."""
    global _helper_users
    if method == "fork":
        return
    with _helpers_lock:
        _helper_users -= 1
        if _helper_users > 0:
            return
        from multiprocessing import forkserver, resource_tracker  # only to stop them: stdlib internals

        for helper in (getattr(forkserver, "_forkserver", None), getattr(resource_tracker, "_resource_tracker", None)):
            stop = getattr(helper, "_stop", None)
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()


class WorkerDied(Exception):
    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(description)


class WorkerStartFailed(Exception):
    def __init__(self, where: str, error: str, traceback: str | None) -> None:
        self.where = where
        self.error = error
        self.traceback = traceback
        super().__init__(f"{where} failed: {error}")


class WorkerHandle:
    def __init__(
        self,
        context: WorkerContext,
        setup: WorkerSetup,
        index: int,
        target: Callable[..., None] = worker_main,
        extra_args: tuple[Any, ...] = (),
    ) -> None:
        self.setup = setup
        self.index = index
        self.items_done = 0
        self._stop_sent = False
        self._reap_lock = threading.Lock()
        self.conn, child_conn = context.Pipe(duplex=True)
        self.shared = context.RawArray("q", 2)
        self.progress = memoryview(self.shared).cast("B").cast("q")
        self.progress[0] = -1
        self.process = context.Process(
            target=target,
            args=(child_conn, self.shared, setup, *extra_args),
            name=f"pipelined:{setup.pipeline}/{setup.stage}#{index}",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self._poller = select.poll()
        self._poller.register(self.conn.fileno(), select.POLLIN)
        self._poller.register(self.process.sentinel, select.POLLIN)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def is_alive(self) -> bool:
        if not self._reap_lock.acquire(blocking=False):
            return True  # another thread is waiting for it to end
        try:
            return self.process.is_alive()
        finally:
            self._reap_lock.release()

    def _exitcode(self) -> int | None:
        with self._reap_lock:
            return self.process.exitcode

    def _wait_exit(self, timeout: float) -> None:
        """Process.join, one thread at a time: with the forkserver, the exit status is read once
        from a pipe, and a second concurrent reader would record exit code 255 instead."""
        with self._reap_lock:
            self.process.join(timeout)

    def wait_ready(self, deadline: float) -> None:
        kind, payload = self.receive(deadline)
        if kind == protocol.START_FAILED:
            where, error, text = payload
            self.join(deadline)
            raise WorkerStartFailed(where, error, text)
        if kind != protocol.READY:
            raise WorkerDied(f"unexpected message {kind!r} before READY")

    def send(self, message: Any) -> None:
        self.send_bytes(protocol.dumps(message))

    def send_bytes(self, data: bytes) -> None:
        try:
            self.conn.send_bytes(data)
        except (OSError, ValueError) as exc:
            raise WorkerDied(self.death_description()) from exc

    def receive(self, deadline: float | None = None) -> tuple[str, Any]:
        """The next (kind, payload); log records are replayed here. WorkerDied when it died."""
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = {fd for fd, _ in self._poller.poll(None if timeout is None else timeout * 1000)}
            if not ready:
                raise WorkerDied(f"no answer within the time limit (pid {self.pid})")
            if self.conn.fileno() not in ready and not self.conn.poll():
                raise WorkerDied(self.death_description())
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError) as exc:
                raise WorkerDied(self.death_description()) from exc
            kind, payload, logs = pickle.loads(data)
            if logs:
                replay(logs)
            return kind, payload

    def death_description(self) -> str:
        self._wait_exit(2.0)
        return f"{protocol.describe_exit(self._exitcode())} (pid {self.pid})"

    def set_stopping(self) -> None:
        self.progress[1] = 1

    def stop(self, deadline: float) -> None:
        """STOP → close() in the worker → joined; killed when the deadline passes first."""
        self.request_stop()
        self.finish_stop(deadline)

    def request_stop(self) -> None:
        self.set_stopping()
        self._stop_sent = True
        try:
            self.send((protocol.STOP,))
        except WorkerDied:
            self._stop_sent = False

    def finish_stop(self, deadline: float) -> None:
        try:
            while self._stop_sent:
                kind, payload = self.receive(deadline)
                if kind == protocol.CLOSED:
                    if payload:
                        log.warning("stage %s: %s", self.setup.stage, payload,
                                    extra={"pipeline": self.setup.pipeline, "stage": self.setup.stage})
                    break
        except (WorkerDied, OSError, ValueError):
            pass
        self.join(deadline)

    def join(self, deadline: float) -> None:
        self._wait_exit(max(0.0, deadline - time.monotonic()))
        if self._exitcode() is None:
            self.kill()
        self.conn.close()

    def kill(self) -> None:
        pid = self.process.pid
        if pid is not None and self._exitcode() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_exit(5.0)
