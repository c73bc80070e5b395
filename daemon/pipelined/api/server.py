"""Serve the Litestar app with an embedded uvicorn in a background thread.

The server runs on its own event loop in a non-main thread, so uvicorn never installs signal
handlers (it only does so in the main thread): signals stay with the supervisor's control loop.
`listen` is `host:port` or `unix:/path`. `start()` raises `CannotListen` when the address cannot
be bound (the daemon then exits 3).
"""

from __future__ import annotations

import asyncio
import logging
import stat
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

log = logging.getLogger("pipelined.api_server")


class CannotListen(Exception):
    """The API could not bind its listen address."""


class ApiServer:
    def __init__(self, app: Any, listen: str) -> None:
        self.listen = listen
        options: dict[str, Any] = {
            "log_config": None,
            "access_log": False,
            "lifespan": "on",
            "server_header": False,
            "timeout_graceful_shutdown": 3,
            "ws": "none",
        }
        if listen.startswith("unix:"):
            self.socket_path: Path | None = Path(listen[len("unix:") :])
            options["uds"] = str(self.socket_path)
        else:
            self.socket_path = None
            host, _, port = listen.rpartition(":")
            options["host"], options["port"] = host.strip("[]"), int(port)
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(target=self._serve, name="pipelined-api", daemon=True)
        self._error: BaseException | None = None

    def _serve(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits with SystemExit on bind errors
            self._error = exc

    def start(self, timeout: float = 20.0) -> None:
        """Start serving; returns once the socket listens (CannotListen if it cannot)."""
        try:
            self._remove_stale_socket()
        except OSError as exc:
            raise CannotListen(f"cannot listen on {self.listen} ({exc.strerror}: {exc.filename})") from exc
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                reason = f" ({self._error!r})" if self._error and not isinstance(self._error, SystemExit) else ""
                raise CannotListen(f"cannot listen on {self.listen}{reason}")
            self._thread.join(0.02)
        if self.socket_path is None:
            log.info("API listening on %s; web page: http://%s/ui/", self.listen, self.listen)
        else:
            log.info("API listening on %s", self.listen)

    def _remove_stale_socket(self) -> None:
        path = self.socket_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except FileNotFoundError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
