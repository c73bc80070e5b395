"""The Ray driver: a child process of the daemon that alone imports `ray` and talks to the cluster.

Why a process of its own: a Ray driver is not a well-behaved library. It terminates its process
when the cluster's GCS stays unreachable for a minute, installs a SIGTERM handler, starts dozens
of threads and may abort in C++. In a child, all of that can only end this process; the daemon
sees its socket close, fails the attempts in flight (retried, then dead-lettered) and starts a
new driver on next use (workers/ray_cluster.py).

    python -m pipelined.workers.ray_driver FD      # FD: the daemon's end of a socketpair

Messages are pickled tuples on a `multiprocessing.connection.Connection` (ray_cluster.py has
the daemon's side and the list). Batches pass through as bytes: the driver never unpickles
items or rows. Every Ray call is asynchronous: replies are sent from Ray's completion callbacks
(`ObjectRef.future()`), in whatever order the calls finish.

Batches travel on *call channels* (workers/ray_channels.py): extra socketpairs the daemon hands
over with `(CHANNEL,)` and the socket itself (SCM_RIGHTS) on the main connection. A thread per
channel reads one call at a time and the reply goes back on that channel, so the daemon's calling
thread waits on its own socket instead of behind a reader thread (one wake-up less per batch).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

# daemon -> driver
CONNECT, ACTOR, CALL, CALL_ITEMWISE, CLOSE, KILL, SHUTDOWN, CHANNEL = (
    "connect", "actor", "call", "itemwise", "close", "kill", "shutdown", "channel")
# driver -> daemon
CONNECTED, CONNECT_FAILED, ACTOR_READY, ACTOR_FAILED, RESULT, CALL_FAILED, CLOSED = (
    "connected", "connect_failed", "actor_ready", "actor_failed", "result", "call_failed", "closed")

MAX_ERROR = 600
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colors its errors' first line


class Driver:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.actors: dict[int, Any] = {}
        self.ray: Any = None
        self.remote_class: Any = None

    # -- plumbing ------------------------------------------------------------------------------
    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock, contextlib.suppress(OSError, ValueError):  # the daemon is gone: we exit soon
            self.conn.send(message)

    def serve(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break  # the daemon exited or closed us: leave nothing behind
            op = message[0]
            if op == SHUTDOWN:
                break
            try:
                self.dispatch(op, message)
            except Exception as exc:  # a bug here must not end the driver silently
                print(f"pipelined ray driver: {op}: {traceback.format_exc()}", file=sys.stderr, flush=True)
                self.reply_error(op, message, exc)
        self.shutdown()

    def reply_error(self, op: str, message: tuple[Any, ...], exc: BaseException) -> None:
        text = _text(exc)
        if op in (CALL, CALL_ITEMWISE):
            self.send((CALL_FAILED, message[1], text, False))
        elif op == CHANNEL:
            pass  # the daemon's call on it fails when the channel closes
        elif op == ACTOR:
            self.send((ACTOR_FAILED, message[1], "actor creation", text, None, True, []))
        elif op == CLOSE:
            self.send((CLOSED, message[1], text))

    def dispatch(self, op: str, message: tuple[Any, ...], reply: Callable[[tuple[Any, ...]], None] | None = None) -> None:
        if op == CALL:
            _, req, actor_id, run_id, data, stopping = message
            self.submit(req, actor_id, "call", (run_id, data, stopping), reply or self.send)
        elif op == CALL_ITEMWISE:
            _, req, actor_id, run_id, pickles, stopping = message
            self.submit(req, actor_id, "call_itemwise", (run_id, pickles, stopping), reply or self.send)
        elif op == CHANNEL:
            channel = Connection(recv_handle(self.conn))  # the socket's fd follows the message
            threading.Thread(target=self.serve_channel, args=(channel,), name="channel", daemon=True).start()
        elif op == ACTOR:
            _, actor_id, setup, options = message
            self.create_actor(actor_id, setup, options)
        elif op == CLOSE:
            self.close_actor(message[1])
        elif op == KILL:
            self.kill_actor(message[1])
        elif op == CONNECT:
            self.send((CONNECT_FAILED, "already connected"))

    def serve_channel(self, channel: Connection) -> None:
        """Calls on one of the daemon's call channels: one at a time, each answered on it."""
        lock = threading.Lock()

        def reply(message: tuple[Any, ...]) -> None:
            with lock, contextlib.suppress(OSError, ValueError):
                channel.send(message)

        while True:
            try:
                message = channel.recv()
            except (EOFError, OSError):
                break
            try:
                self.dispatch(message[0], message, reply)
            except Exception as exc:
                print(f"pipelined ray driver: {message[0]}: {traceback.format_exc()}", file=sys.stderr, flush=True)
                reply((CALL_FAILED, message[1], _text(exc), False))
        with contextlib.suppress(OSError):
            channel.close()

    # -- connecting ----------------------------------------------------------------------------
    def connect(self, config: dict[str, Any]) -> dict[str, Any]:
        import ray

        from pipelined.workers.ray_actor import StageActor

        self.ray = ray
        kwargs: dict[str, Any] = {
            "namespace": config["namespace"],
            "log_to_driver": False,
            "configure_logging": False,
            "ignore_reinit_error": False,
        }
        if config["embedded"]:
            kwargs.update(
                address="local",
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                _temp_dir=config["temp_dir"],
                object_store_memory=config["object_store_memory"],
            )
            if config.get("num_cpus") is not None:
                kwargs["num_cpus"] = config["num_cpus"]
        else:
            kwargs["address"] = config["address"]
        for attempt in (1, 2):
            try:
                ray.init(**kwargs)
                break
            except Exception as exc:  # a raylet slower than Ray's fixed 30 s (a loaded machine): once more
                if not config["embedded"] or attempt == 2 or "timed out during startup" not in str(exc):
                    raise
                print(f"pipelined ray driver: {exc}; starting the embedded instance again", file=sys.stderr, flush=True)
                ray.shutdown()
        leave_stop_signals_to_the_daemon()  # ray.init installed its own SIGTERM handler
        self.remote_class = ray.remote(StageActor)
        context = ray.get_runtime_context()
        info: dict[str, Any] = {"pid": os.getpid(), "ray_version": ray.__version__,
                                "node_id": context.get_node_id()}
        node = getattr(getattr(ray, "_private", None), "worker", None)
        global_node = getattr(node, "_global_node", None) if node is not None else None
        if global_node is not None:
            info["session_dir"] = global_node.get_session_dir_path()
            info["gcs_address"] = global_node.gcs_address
        return info

    # -- actors --------------------------------------------------------------------------------
    def create_actor(self, actor_id: int, setup: Any, options: dict[str, Any]) -> None:
        options = dict(options)
        if options.get("runtime_env"):
            options["runtime_env"] = self.upload_code(options["runtime_env"])
        handle = self.remote_class.options(**options).remote(setup)
        self.actors[actor_id] = handle

        def started(future: Any) -> None:
            try:
                kind, payload, logs = future.result()
            except Exception as exc:
                self.actors.pop(actor_id, None)
                self.send((ACTOR_FAILED, actor_id, "actor start", _text(exc), None, True, []))
                return
            if kind == "ready":
                self.send((ACTOR_READY, actor_id, payload, logs))
            else:
                where, error, text = payload
                self.send((ACTOR_FAILED, actor_id, where, error, text, False, logs))

        handle.start.remote().future().add_done_callback(started)

    def upload_code(self, runtime_env: dict[str, Any]) -> dict[str, Any]:
        """Local `py_modules` directories and files -> `gcs://` URIs (content-hashed: an unchanged
        module is not uploaded again). Ray accepts local paths only in `ray.init`'s job-wide
        runtime_env; an actor's must name URIs, so the driver uploads them the same way."""
        from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

        return dict(upload_py_modules_if_needed(dict(runtime_env), include_gitignore=True,
                                                scratch_dir=os.getcwd()))

    def submit(self, req: int, actor_id: int, method: str, args: tuple[Any, ...],
               reply: Callable[[tuple[Any, ...]], None]) -> None:
        handle = self.actors.get(actor_id)
        if handle is None:
            reply((CALL_FAILED, req, "RayActorDied: ray actor died: it is gone (killed or never started)", True))
            return
        ray = self.ray

        def done(future: Any) -> None:
            try:
                result = future.result()
            except ray.exceptions.ActorUnavailableError as exc:
                reply((CALL_FAILED, req, f"RayActorUnavailable: ray actor unavailable: {_text(exc)}", False))
            except ray.exceptions.RayActorError as exc:
                self.actors.pop(actor_id, None)
                reply((CALL_FAILED, req, f"RayActorDied: ray actor died: {_text(exc)}", True))
            except Exception as exc:
                reply((CALL_FAILED, req, f"RayError: {_text(exc)}", False))
            else:
                reply((RESULT, req, result))

        getattr(handle, method).remote(*args).future().add_done_callback(done)

    def close_actor(self, actor_id: int) -> None:
        handle = self.actors.get(actor_id)
        if handle is None:
            self.send((CLOSED, actor_id, None, []))
            return

        def closed(future: Any) -> None:
            try:
                _kind, error, logs = future.result()
            except Exception as exc:
                error, logs = f"close() did not run: {_text(exc)}", []
            self.send((CLOSED, actor_id, error, logs))  # the daemon kills it (never from a Ray callback)

        handle.close.remote().future().add_done_callback(closed)

    def kill_actor(self, actor_id: int) -> None:
        handle = self.actors.pop(actor_id, None)
        if handle is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(handle, no_restart=True)

    def shutdown(self) -> None:
        for actor_id in list(self.actors):
            self.kill_actor(actor_id)
        if self.ray is not None:
            with contextlib.suppress(Exception):
                self.ray.shutdown()  # stops an embedded instance; only disconnects from a cluster


def _text(exc: BaseException) -> str:
    """`TypeName: first lines of the message`, short enough for a log line and a dead letter.
    Ray's errors from inside an actor (`RayTaskError(KeyError)`) say what was raised there, not
    the colored `ray::StageActor.call() (pid=..., ...)` header and traceback lines before it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return _short(f"{type(exc).__name__}: {_text(cause)}")
    lines = [line.strip() for line in ANSI.sub("", str(exc)).strip().splitlines() if line.strip()]
    message = " ".join(lines[:3]) if lines else ""
    return _short(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def _text_with_cause(exc: BaseException) -> str:
    """`_text(exc)`, then what caused it: Ray wraps a wrong token or an unreachable GCS into
    "ConnectionError: Failed to connect to Ray cluster at ...", with the reason in its cause (and
    there as the last line of a traceback's text)."""
    text = _text(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is None:
        return text
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if lines and "Traceback (most recent call last)" in str(cause):
        name, _, message = lines[-1].partition(": ")
        root = f"{name.rsplit('.', 1)[-1]}: {message}" if message else name
    else:
        root = _text(cause)
    combined = f"{text} (caused by {root})"
    return combined if len(combined) <= MAX_ERROR else combined[: MAX_ERROR - 3] + "..."


def leave_stop_signals_to_the_daemon() -> None:
    """Ctrl-C and the unit's SIGTERM are the daemon's: it drains, then tells us to shut down."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore_signal)  # not SIG_IGN: that would be inherited by Ray's processes


def _ignore_signal(signum: int, frame: Any) -> None:
    pass


def main(argv: list[str]) -> int:
    leave_stop_signals_to_the_daemon()
    conn = Connection(int(argv[0]))
    driver = Driver(conn)
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return 0
    if message[0] != CONNECT:
        return 2
    try:
        info = driver.connect(message[1])
    except BaseException as exc:  # SystemExit from Ray included: the daemon must hear why
        print(f"pipelined ray driver: connect failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        driver.send((CONNECT_FAILED, _text_with_cause(exc)))
        driver.shutdown()
        return 1
    driver.send((CONNECTED, info))
    driver.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
