"""sd_notify for the daemon: silent (and never raising) without `NOTIFY_SOCKET`.

    notifier = Notifier.from_environment()
    notifier.ready()                 # READY=1 once the API listens and the first apply is done
    notifier.reloading()             # RELOADING=1 + MONOTONIC_USEC=<CLOCK_MONOTONIC µs>, then ready()
    notifier.stopping()              # STOPPING=1
    notifier.status("3 pipelines running, 1 failed, 1.2k items/s")
    Heartbeat(notifier, healthy=loop.is_healthy, status=...).start()   # WATCHDOG=1 + STATUS=

Every message is one datagram; systemd-python's `systemd.daemon.notify` sends it (it handles
abstract `@` addresses). When systemd-python is missing a plain socket does the same.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("pipelined.notify")

STATUS_INTERVAL = 5.0


def _send_with_socket(address: str, message: str) -> bool:
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), target)
        return True
    except OSError:
        return False


class Notifier:
    """Sends sd_notify messages when `NOTIFY_SOCKET` is set, otherwise does nothing."""

    def __init__(self, socket_address: str | None, watchdog_usec: int | None = None) -> None:
        self.socket_address = socket_address or None
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        watchdog_usec: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_usec = int(usec)
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.socket_address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), None without a watchdog."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def send(self, message: str) -> bool:
        """Send one datagram (lines joined by newlines); False when disabled or it failed."""
        if self.socket_address is None:
            return False
        if os.environ.get("NOTIFY_SOCKET") != self.socket_address:
            return _send_with_socket(self.socket_address, message)
        try:
            from systemd import daemon as sd_daemon  # here: a broken extension falls back to the socket

            return bool(sd_daemon.notify(message))
        except Exception as exc:  # noqa: BLE001 - notify must never break the daemon
            log.debug("sd_notify failed: %s", exc)
            return _send_with_socket(self.socket_address, message)

    def ready(self) -> bool:
        return self.send("READY=1")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


class Heartbeat:
    """A daemon thread: WATCHDOG=1 at half WATCHDOG_USEC while `healthy()`, STATUS= every 5 s."""

    def __init__(
        self,
        notifier: Notifier,
        healthy: Callable[[], bool],
        status: Callable[[], str],
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        self.notifier = notifier
        self.healthy = healthy
        self.status_text = status
        self.status_interval = status_interval
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipelined-heartbeat", daemon=True)
        self._last_status = ""
        self._status_enabled = False  # no STATUS= before READY=1

    def start(self) -> None:
        if self.notifier.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()

    def poke(self) -> None:
        """Send the status line now; the first poke (after the first READY=1) enables STATUS= lines."""
        self._status_enabled = True
        self._poke.set()

    def _run(self) -> None:
        watchdog = self.notifier.watchdog_interval
        tick = min(watchdog, self.status_interval) if watchdog else self.status_interval
        next_status = time.monotonic()
        while not self._stop.is_set():
            if watchdog and self.healthy():
                self.notifier.watchdog()
            if self._status_enabled and (time.monotonic() >= next_status or self._poke.is_set()):
                self._poke.clear()
                self._send_status()
                next_status = time.monotonic() + self.status_interval
            self._poke.wait(tick)

    def _send_status(self) -> None:
        try:
            text = self.status_text()
        except Exception as exc:  # noqa: BLE001 - a status line is best effort
            log.debug("status line failed: %s", exc)
            return
        if text != self._last_status:
            self.notifier.status(text)
            self._last_status = text
