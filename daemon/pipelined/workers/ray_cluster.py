"""The daemon's connection to Ray: one driver process (workers/ray_driver.py) per cluster.

    cluster = cluster_for(RayConfig(address="", namespace="pipelined", state_dir=state_dir))
    cluster.connect()                        # starts the driver; RayUnavailable naming the address
    actor_id, ready = cluster.new_actor(setup, options)   # ready: Future -> info, or ActorStartFailed
    cluster.call(actor_id, run_id, data, stopping)        # blocks: reply bytes, or RayCallFailed
    cluster.close_actor(actor_id)            # Future -> close() error text or None
    shutdown_clusters(timeout)               # at daemon exit

`address = ""`: the driver starts an embedded Ray instance on first use, advertised on 127.0.0.1,
its temp dir, logs and auth token under `<state_dir>/ray/` (token authentication on, so the
ports Ray opens accept only holders of that 0600 file). Otherwise the driver connects to the
cluster at `address` and leaves it running when the daemon exits.

The daemon never imports `ray`. When the driver process dies (the cluster was lost: Ray ends a
driver whose GCS stays unreachable for a minute), every call in flight fails with
`RayCallFailed(dead=True)`, and the next `connect()` starts a new driver — at most one attempt
every RECONNECT_EVERY seconds, failing fast in between.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipelined.workers import ray_driver as msg
from pipelined.workers.logbridge import replay
from pipelined.workers.ray_channels import CallChannels, ChannelLost, reply_bytes
from pipelined.workers.ray_config import DEFAULT_OBJECT_STORE, ray_installed
from pipelined.workers.ray_config import INSTALL_HINT as INSTALL_HINT  # re-exported
from pipelined.workers.ray_config import ActorStartFailed as ActorStartFailed
from pipelined.workers.ray_config import RayCallFailed as RayCallFailed
from pipelined.workers.ray_config import RayConfig as RayConfig
from pipelined.workers.ray_config import RayUnavailable as RayUnavailable
from pipelined.workers.ray_instance import INSTANCE_MARK as INSTANCE_MARK  # re-exported
from pipelined.workers.ray_instance import connect_hint, driver_env, kill_leftovers, temp_dir
from pipelined.workers.ray_reach import last_error, probe

log = logging.getLogger("pipelined.workers")

CONNECT_TIMEOUT = 120.0  # ray.init of an embedded instance takes 4-10 s on a busy machine
RECONNECT_EVERY = 5.0
LOSS_WAIT = 15.0  # a call whose channel closed waits this long for the reason the driver went
SHUTDOWN_TIMEOUT = 15.0


class RayCluster:
    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self.ray_dir = config.state_dir / "ray"
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._pending: dict[tuple[str, int], Future[Any]] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._last_failure: tuple[float, str] | None = None
        self._closed = False
        self._ray_temp: str | None = None  # the temp dir the embedded instance was given
        self._log_offset = 0  # where the current driver's output starts in driver.log
        self.channels = CallChannels()
        self._losses: dict[int, str] = {}  # generation -> why its driver went
        self._lost_cond = threading.Condition()
        self.generation = 0  # +1 per driver started: actors of older generations are gone

    # -- connection ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
        """Start the driver and connect (once; again after it died). RayUnavailable otherwise."""
        with self._connect_lock:
            if self._conn is not None:
                return self.info
            if self._closed:
                raise RayUnavailable(f"{self.config.describe()}: the daemon is shutting down")
            if not ray_installed():
                raise RayUnavailable(f"Ray is not installed; {INSTALL_HINT}")
            if self._last_failure is not None and time.monotonic() - self._last_failure[0] < RECONNECT_EVERY:
                raise RayUnavailable(self._last_failure[1])
            try:
                if not self.config.embedded and (why := probe(self.config.address)) is not None:
                    raise RayUnavailable(f"{self.config.describe()} cannot be reached: {why}")
                self._start_driver(timeout)
            except RayUnavailable as exc:
                self._last_failure = (time.monotonic(), str(exc))
                raise
            self._last_failure = None
            return self.info

    def _start_driver(self, timeout: float) -> None:
        self.ray_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        parent, child = socket.socketpair()
        with open(self.ray_dir / "driver.log", "ab") as output:
            self._log_offset = output.seek(0, os.SEEK_END)
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipelined.workers.ray_driver", str(child.fileno())],
                pass_fds=(child.fileno(),), env=self._driver_env(), cwd=self.ray_dir,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is the daemon's; its group is ours to clean up
            )
        child.close()
        conn = Connection(parent.detach())
        try:
            conn.send((msg.CONNECT, self._connect_config()))
            if not conn.poll(timeout):
                raise RayUnavailable(f"{self.config.describe()}: no connection after {timeout:.0f} s")
            reply = conn.recv()
        except (EOFError, OSError) as exc:
            conn.close()
            self._stop_process(proc, 5.0)
            raise RayUnavailable(f"{self.config.describe()}: the Ray driver process {self._exit(proc)} "
                                 f"({exc or 'no reply'}); see {self.ray_dir / 'driver.log'}") from None
        except RayUnavailable:
            conn.close()
            self._stop_process(proc, 5.0)
            raise
        if reply[0] != msg.CONNECTED:
            conn.close()
            self._stop_process(proc, 5.0)
            how = "did not start" if self.config.embedded else "cannot be reached"
            raise RayUnavailable(f"{self.config.describe()} {how}: {reply[1]}{connect_hint(reply[1])}")
        self.info = reply[1]
        self._proc, self._conn = proc, conn
        self.generation += 1
        self.channels.open(conn, self._send_lock, proc.pid, self.generation)
        log.info("ray: connected to %s (driver pid %d, ray %s)", self.config.describe(), proc.pid,
                 self.info.get("ray_version"))
        threading.Thread(target=self._read, args=(conn, proc), name="ray-driver-reader", daemon=True).start()

    def _connect_config(self) -> dict[str, Any]:
        config = self.config
        if config.embedded:
            self._ray_temp = str(temp_dir(self.ray_dir))
        return {
            "embedded": config.embedded,
            "address": config.address,
            "namespace": config.namespace,
            "temp_dir": self._ray_temp if config.embedded else None,
            "object_store_memory": config.object_store_memory or DEFAULT_OBJECT_STORE,
            "num_cpus": config.num_cpus,
        }

    def _driver_env(self) -> dict[str, str]:
        return driver_env(dict(os.environ), self.ray_dir, self.config.embedded)

    # -- messages ------------------------------------------------------------------------------
    def _send(self, message: tuple[Any, ...], key: tuple[str, int] | None = None) -> Future[Any]:
        future: Future[Any] = Future()
        conn = self._conn
        if conn is None:
            future.set_exception(RayCallFailed(
                f"RayUnavailable: {self.config.describe()} is not connected", dead=True))
            return future
        if key is not None:
            with self._pending_lock:
                self._pending[key] = future
        try:
            with self._send_lock:
                conn.send(message)
        except (OSError, ValueError) as exc:
            if key is not None:
                with self._pending_lock:
                    self._pending.pop(key, None)
            if not future.done():
                future.set_exception(RayCallFailed(f"RayDriverLost: the Ray driver process is gone ({exc})", True))
        if key is None:
            future.set_result(None)
        return future

    def new_actor(self, setup: Any, options: dict[str, Any]) -> tuple[int, Future[Any]]:
        actor_id = next(self._ids)
        return actor_id, self._send((msg.ACTOR, actor_id, setup, options), ("actor", actor_id))

    def call(self, actor_id: int, run_id: str | None, data: bytes, stopping: bool) -> bytes:
        """One pickled batch on an actor, on a call channel: the reply's bytes, or RayCallFailed."""
        return self._request((msg.CALL, next(self._ids), actor_id, run_id, data, stopping))

    def call_itemwise(self, actor_id: int, run_id: str | None, pickles: list[tuple[bytes, str]],
                      stopping: bool) -> bytes:
        return self._request((msg.CALL_ITEMWISE, next(self._ids), actor_id, run_id, pickles, stopping))

    def _request(self, message: tuple[Any, ...]) -> bytes:
        generation = self.generation
        try:
            reply = self.channels.request(message)
        except ChannelLost as exc:
            if self._conn is None and generation not in self._losses:
                raise RayCallFailed(f"RayUnavailable: {self.config.describe()} is not connected", dead=True) from None
            raise RayCallFailed(f"RayDriverLost: {self._loss(generation, str(exc))}", dead=True) from None
        return reply_bytes(reply, RayCallFailed)

    def _loss(self, generation: int, fallback: str) -> str:
        """Why the driver of `generation` went (its last error), once _lost has looked."""
        with self._lost_cond:
            self._lost_cond.wait_for(lambda: generation in self._losses, LOSS_WAIT)
            return self._losses.get(generation, f"the Ray driver process is gone ({fallback})")

    def close_actor(self, actor_id: int) -> Future[str | None]:
        return self._send((msg.CLOSE, actor_id), ("close", actor_id))

    def kill_actor(self, actor_id: int) -> None:
        self._send((msg.KILL, actor_id))

    def _resolve(self, key: tuple[str, int]) -> Future[Any] | None:
        with self._pending_lock:
            return self._pending.pop(key, None)

    def _read(self, conn: Connection, proc: subprocess.Popen[bytes]) -> None:
        try:
            while True:
                message = conn.recv()
                self._dispatch(message)
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("ray: reading from the driver process failed")
        self._lost(conn, proc)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == msg.ACTOR_READY:
            replay(message[3])
            future = self._resolve(("actor", message[1]))
            if future is not None:
                future.set_result(message[2])
        elif kind == msg.ACTOR_FAILED:
            _, actor_id, where, error, text, _dead, logs = message
            replay(logs)
            future = self._resolve(("actor", actor_id))
            if future is not None:
                future.set_exception(ActorStartFailed(where, error, text))
        elif kind == msg.CLOSED:
            replay(message[3] if len(message) > 3 else [])
            future = self._resolve(("close", message[1]))
            if future is not None:
                future.set_result(message[2])

    def _lost(self, conn: Connection, proc: subprocess.Popen[bytes]) -> None:
        """The driver's socket closed: fail everything pending, clean up what it left."""
        with self._connect_lock:
            offset = self._log_offset  # before a new driver may start
            generation = self.generation
            if self._conn is conn:
                self._conn, self._proc = None, None
                self.channels.close(generation)
            expected = self._closed
        with contextlib.suppress(OSError):
            conn.close()
        self._stop_process(proc, 5.0)
        how = self._exit(proc)
        why = last_error(self.ray_dir / "driver.log", offset)
        lost = f"the Ray driver process {how}" + (f" ({why})" if why else "")
        with self._lost_cond:
            self._losses[generation] = lost
            self._lost_cond.notify_all()
        if not expected:
            log.warning("ray: lost %s: %s; calls in flight fail and are retried; see %s",
                        self.config.describe(), lost, self.ray_dir / "driver.log")
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for (kind, _), future in pending.items():
            if future.done():
                continue
            if kind == "close":
                future.set_result(None)
            elif kind == "actor":
                future.set_exception(ActorStartFailed("actor start", f"RayDriverLost: {lost}", None))
            else:
                future.set_exception(RayCallFailed(f"RayDriverLost: {lost}", dead=True))

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop the driver: an embedded instance stops with it; a cluster is only disconnected."""
        with self._connect_lock:
            self._closed = True
            conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            return
        with contextlib.suppress(OSError, ValueError), self._send_lock:
            conn.send((msg.SHUTDOWN,))
        self._stop_process(proc, timeout)

    def _stop_process(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self.config.embedded:
            kill_leftovers(proc.pid, str(self.ray_dir))

    @staticmethod
    def _exit(proc: subprocess.Popen[bytes]) -> str:
        code = proc.poll()
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"


_configured: RayConfig | None = None
_clusters: dict[RayConfig, RayCluster] = {}
_clusters_lock = threading.Lock()


def cluster_for(config: RayConfig) -> RayCluster:
    """The daemon's one RayCluster for these settings (created on first use, not connected)."""
    with _clusters_lock:
        cluster = _clusters.get(config)
        if cluster is None or cluster._closed:
            cluster = _clusters[config] = RayCluster(config)
        return cluster


def configure(config: RayConfig) -> None:
    """The daemon's `[ray]` settings (host/run.py calls this at start)."""
    global _configured
    _configured = config


def default_cluster() -> RayCluster:
    """The cluster of the configured settings; unconfigured (tests of the engine alone): an
    embedded instance under $PIPELINED_STATE_DIR or the temp dir."""
    config = _configured
    if config is None:
        state = os.environ.get("PIPELINED_STATE_DIR") or os.path.join(tempfile.gettempdir(), f"pipelined-{os.getuid()}")
        config = RayConfig(state_dir=Path(state))
    return cluster_for(config)


def shutdown_clusters(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """At daemon exit: stop every driver (and so the embedded instance)."""
    with _clusters_lock:
        clusters = list(_clusters.values())
        _clusters.clear()
    for cluster in clusters:
        try:
            cluster.shutdown(timeout)
        except Exception:
            log.exception("ray: shutting down %s failed", cluster.config.describe())
