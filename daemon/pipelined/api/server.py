"""Serve the Litestar app with an embedded uvicorn in a background thread.

The server runs on its own event loop in a non-main thread, so uvicorn never installs signal
handlers (it only does so in the main thread): signals stay with the supervisor's control loop.
`listen` is `host:port` or `unix:/path`. `start()` raises `CannotListen` when the address cannot
be bound (the daemon then exits 3).

A unix socket is bound here, not by uvicorn (which would make it 0666): it is created with mode
0600 (`socket_mode`, and `socket_group` as its group, widen it on purpose) before it listens, in
a directory other users may not write. With `tls` (certificate, key) a TCP address serves HTTPS:
the connection guard does each handshake itself (uvicorn's TLS context, asyncio's `start_tls`),
so a connection is counted from its accept. Connections go through
`connections.ConnectionGuard`: a deadline for every request, a cap on open connections, and a
quiet EMFILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import create_ssl_context

from pipelined.api.connections import ConnectionGuard
from pipelined.config.permissions import writable_by_others

log = logging.getLogger("pipelined.api_server")

DEFAULT_MAX_CONNECTIONS = 1024


class CannotListen(Exception):
    """The API could not bind its listen address."""


@dataclass(frozen=True)
class SocketOptions:
    """How the API's socket is made: a unix socket's mode and group, TLS for TCP."""

    mode: int = 0o600
    group: str = ""  # name or number; "": the daemon's own group
    tls_cert: Path | None = None
    tls_key: Path | None = None


class ApiServer:
    def __init__(
        self, app: Any, listen: str, options: SocketOptions | None = None, *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.listen = listen
        self.options = options or SocketOptions()
        self.guard = ConnectionGuard(max_connections)  # request deadline, connection cap, EMFILE, TLS
        config: dict[str, Any] = {
            "http": self.guard.protocol_class(),
            "log_config": None,
            "access_log": False,
            "lifespan": "on",
            "server_header": False,
            "timeout_graceful_shutdown": 3,
            "ws": "none",
        }
        self._sockets: list[socket.socket] | None = None
        if listen.startswith("unix:"):
            self.socket_path: Path | None = Path(listen[len("unix:") :])
        else:
            self.socket_path = None
            host, _, port = listen.rpartition(":")
            config["host"], config["port"] = host.strip("[]"), int(port)
        self.server = uvicorn.Server(uvicorn.Config(app, **config))
        self._thread = threading.Thread(target=self._serve, name="pipelined-api", daemon=True)
        self._error: BaseException | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.options.tls_cert is not None and self.socket_path is None else "http"

    def _serve(self) -> None:
        try:
            asyncio.run(self._serve_guarded())
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits with SystemExit on bind errors
            self._error = exc

    async def _serve_guarded(self) -> None:
        asyncio.get_running_loop().set_exception_handler(self.guard.loop_exception)
        await self.server.serve(sockets=self._sockets)

    def start(self, timeout: float = 20.0) -> None:
        """Start serving; returns once the socket listens (CannotListen if it cannot)."""
        if self.socket_path is not None:
            self._sockets = [self._bind_unix_socket(self.socket_path)]
        elif self.options.tls_cert is not None:
            self.guard.tls = self._tls_context(self.options.tls_cert, self.options.tls_key)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                reason = f" ({self._error!r})" if self._error and not isinstance(self._error, SystemExit) else ""
                raise CannotListen(f"cannot listen on {self.listen}{reason}")
            self._thread.join(0.02)
        if self.socket_path is None:
            log.info("API listening on %s; web page: %s://%s/ui/", self.listen, self.scheme, self.listen)
        else:
            log.info("API listening on %s", self.listen)

    def _tls_context(self, cert: Path, key: Path | None) -> ssl.SSLContext:
        """The server's TLS context (what uvicorn would make of ssl_certfile/ssl_keyfile); the
        handshake itself is the connection guard's (connections.py)."""
        try:
            return create_ssl_context(cert, key, None, ssl.PROTOCOL_TLS_SERVER, ssl.CERT_NONE, None, None)
        except (OSError, ssl.SSLError) as exc:
            raise CannotListen(f"cannot listen on {self.listen} (tls_cert/tls_key: {exc})") from None

    def _bind_unix_socket(self, path: Path) -> socket.socket:
        """Bound and listening, mode and group set before the first connection can be accepted."""
        try:
            self._prepare_directory(path.parent)
            self._remove_stale_socket(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except KeyError as exc:
            raise CannotListen(f"cannot listen on {self.listen} ({exc.args[0]})") from None
        except OSError as exc:
            raise CannotListen(f"cannot listen on {self.listen} ({exc.strerror}: {exc.filename or path})") from exc
        try:
            previous = os.umask(0o177)  # created 0600 (the socket file gets 0777 & ~umask)
            try:
                sock.bind(str(path))
            finally:
                os.umask(previous)
            if self.options.group:
                _set_group(path, self._gid(self.options.group))
            os.chmod(path, self.options.mode)
            sock.listen(2048)
        except (OSError, KeyError) as exc:
            sock.close()
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
            why = f"{exc.strerror}: {exc.filename or path}" if isinstance(exc, OSError) else str(exc)
            raise CannotListen(f"cannot listen on {self.listen} ({why})") from exc
        return sock

    @staticmethod
    def _gid(group: str) -> int:
        if group.isdigit():
            return int(group)
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise KeyError(f"[api] socket_group: no such group {group!r}") from None

    def _prepare_directory(self, directory: Path) -> None:
        """Create the socket's directory (0700, or 0750 and the socket's group for a group socket);
        refuse one others may write."""
        if not directory.exists():
            mode = 0o750 if self.options.group else 0o700
            directory.mkdir(mode=mode, parents=True)
            os.chmod(directory, mode)  # mkdir's mode is reduced by the umask
            if self.options.group:
                _set_group(directory, self._gid(self.options.group))
        who = writable_by_others(directory)  # another owner, o+w, or g+w for a shared group
        if who is not None:
            mode = stat.S_IMODE(directory.stat().st_mode)
            what = "owned by" if who.startswith("user ") else "writable by"
            raise CannotListen(
                f"cannot listen on {self.listen}: its directory {directory} is {what}"
                f" {'every user' if who == 'others' else who} (mode {mode:04o}), who could replace the"
                " socket (and take the token clients send); use a directory of its own"
                " (under systemd: /run/pipelined)"
            )

    @staticmethod
    def _remove_stale_socket(path: Path) -> None:
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


def _set_group(path: Path, gid: int) -> None:
    """chgrp, skipped when it is the group already (the daemon's own group: under systemd's
    syscall filter, which refuses chown, `Group=` gives the socket its group)."""
    if path.stat().st_gid != gid:
        os.chown(path, -1, gid)
