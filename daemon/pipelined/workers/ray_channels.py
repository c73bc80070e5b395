"""Call channels to the Ray driver: the calling thread sends a batch and waits on its own socket.

    channels = CallChannels()
    channels.open(conn, send_lock, generation)     # a new driver: channels of older ones are gone
    reply = channels.request(message, lost)        # blocks; RayCallFailed when the driver is gone
    channels.close()                               # the driver was lost or shut down

Why: with one connection, a reply woke the daemon's reader thread, which woke the caller, two
acquisitions of the GIL while the engine's other threads hold it (one switch interval, 5 ms,
each). A channel is a socketpair of its own (its far end passed to the driver over the main
connection with SCM_RIGHTS), used by one call at a time, kept in a pool for the next call: the
reply wakes the caller itself. As many channels exist as calls ever ran at once (replicas ×
max_in_flight of the Ray stages).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from typing import Any

from pipelined.workers import ray_driver as msg


class ChannelLost(Exception):
    """The driver closed the channel (it exited) before the reply came."""


class CallChannels:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Connection] = []
        self._conn: Connection | None = None
        self._send_lock: threading.Lock | None = None
        self._driver_pid = 0
        self._generation = 0

    def open(self, conn: Connection, send_lock: threading.Lock, driver_pid: int, generation: int) -> None:
        with self._lock:
            stale, self._free = self._free, []
            self._conn, self._send_lock, self._driver_pid, self._generation = conn, send_lock, driver_pid, generation
        for channel in stale:
            with contextlib.suppress(OSError):
                channel.close()

    def close(self, generation: int | None = None) -> None:
        """Forget the channels (of `generation` only, when given: a newer driver keeps its own)."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            stale, self._free, self._conn = self._free, [], None
        for channel in stale:
            with contextlib.suppress(OSError):
                channel.close()

    def request(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        """Send `message` on a free channel and return the driver's reply (ChannelLost if none)."""
        channel, generation = self._take()
        try:
            channel.send(message)
            reply: tuple[Any, ...] = channel.recv()
        except (EOFError, OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                channel.close()
            raise ChannelLost(str(exc) or type(exc).__name__) from None
        self._give_back(channel, generation)
        return reply

    def _take(self) -> tuple[Connection, int]:
        with self._lock:
            if self._free:
                return self._free.pop(), self._generation
            conn, send_lock, pid, generation = self._conn, self._send_lock, self._driver_pid, self._generation
        if conn is None or send_lock is None:
            raise ChannelLost("the Ray driver is not connected")
        mine, theirs = socket.socketpair()
        try:
            with send_lock:  # the fd must follow its message on the stream, nothing in between
                conn.send((msg.CHANNEL,))
                send_handle(conn, theirs.fileno(), pid)
        except (OSError, ValueError) as exc:
            mine.close()
            raise ChannelLost(str(exc) or type(exc).__name__) from None
        finally:
            theirs.close()
        return Connection(mine.detach()), generation

    def _give_back(self, channel: Connection, generation: int) -> None:
        with self._lock:
            if generation == self._generation and self._conn is not None:
                self._free.append(channel)
                return
        with contextlib.suppress(OSError):
            channel.close()


def reply_bytes(reply: tuple[Any, ...], failed: Callable[[str, bool], Exception]) -> bytes:
    """The reply's bytes, or raise `failed(error, dead)` for a CALL_FAILED reply."""
    if reply[0] == msg.RESULT:
        data: bytes = reply[2]
        return data
    raise failed(reply[2], reply[3])
