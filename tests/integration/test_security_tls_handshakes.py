"""TLS connections that never finish their handshake cannot shut the API out (issue 16, second
review).

Reproduced before the fix: with `tls_cert`/`tls_key`, uvicorn's TLS let a connection reach the
connection guard (api/connections.py) only once its handshake was done, and asyncio gives a
handshake 60 s. 300 TCP connections that sent nothing held 300 descriptors the guard neither
counted nor closed: with the open-files limit at 128, `GET /health` over HTTPS timed out for as
long as they were renewed. Now a TLS connection is counted, capped and on the request deadline
from the moment it is accepted, like a clear-text one.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness import DaemonProcess, wait_for


def _health(daemon: DaemonProcess, cert: Path) -> bool:
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        return httpx.get(f"{daemon.url}/health", timeout=3, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(120)
def test_connections_that_never_start_tls_do_not_shut_out_https(
    make_daemon: Callable[..., DaemonProcess], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    daemon = make_daemon(settings=f'[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', token="tls-token", tls_ca=cert)
    daemon.start()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (128, hard))
    silent: list[socket.socket] = []
    try:
        for _ in range(300):  # more than the daemon may open; none ever sends a ClientHello
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", daemon.port))
            silent.append(sock)
        wait_for(lambda: _health(daemon, cert), timeout=20, interval=0.5, what="/health answering over HTTPS")
        assert daemon.client.get("/pipelines").status_code == 200  # an operator gets in too
    finally:
        for sock in silent:
            sock.close()
    assert daemon.alive()
    assert daemon.stop() == 0


def test_https_still_serves_a_request_sent_with_the_handshake(
    make_daemon: Callable[..., DaemonProcess], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    daemon = make_daemon(settings=f'[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', token="tls-token", tls_ca=cert)
    daemon.start()
    context = ssl.create_default_context(cafile=str(cert))
    for _ in range(20):  # the request right behind the handshake, on fresh connections
        raw = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    r = daemon.client.post("/reload", headers={"Origin": daemon.url})  # scheme seen as https
    assert r.status_code == 200, r.text
    assert daemon.stop() == 0
