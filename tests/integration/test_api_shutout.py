"""Nobody can shut the API out (a real daemon, raw sockets).

- half-sent requests (headers, or a body, that never complete) are closed after a few seconds;
- past `[api] max_connections`, new connections push out the oldest idle ones, so `/health`
  keeps answering;
- with the open-files limit lowered under the daemon (prlimit), hundreds of slow connections
  cause neither a log flood nor a busy loop, and `/health` answers.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from harness import DaemonProcess, wait_for


def _connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        sock.sendall(data)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset); reads and drops any answer."""
    while True:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except BlockingIOError:
            return False


def _health(daemon: DaemonProcess) -> bool:
    try:
        return httpx.get(f"{daemon.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(90)
def test_half_sent_requests_are_closed_after_a_few_seconds(daemon: DaemonProcess) -> None:
    daemon.start()
    port = daemon.port
    half_headers = [_connect(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") for _ in range(50)]
    half_body = [
        _connect(port, b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"a\":")
        for _ in range(5)
    ]  # fmt: skip
    silent = [_connect(port) for _ in range(5)]
    # a kept-alive connection: one whole request answered, then half of the next one
    kept = _connect(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = wait_for(lambda: kept.recv(4096) if select.select([kept], [], [], 0)[0] else b"", what="an answer")
    assert answer.startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /health HTTP/1.1\r\nHo")
    slow = [*half_headers, *half_body, *silent, kept]
    try:
        wait_for(lambda: all(_closed_by_server(s) for s in slow), timeout=40, interval=0.2,
                 what="every half-sent request closed by the daemon")  # fmt: skip
        assert _health(daemon)
    finally:
        for sock in slow:
            sock.close()
    assert daemon.stop() == 0


@pytest.mark.timeout(90)
def test_past_max_connections_the_oldest_idle_ones_make_room_and_health_answers(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(settings="[api]\nmax_connections = 20\n")
    daemon.start()
    idle = [_connect(daemon.port) for _ in range(100)]
    try:
        for _ in range(5):
            assert _health(daemon)
        still_open = [s for s in idle if not _closed_by_server(s)]
        assert len(still_open) <= 20, f"{len(still_open)} idle connections still open past the cap of 20"
        assert still_open == idle[-len(still_open):] or len(still_open) < 20  # the newest are kept
    finally:
        for sock in idle:
            sock.close()
    warnings = [line for line in daemon.logs().splitlines() if "API connections" in line]
    assert 1 <= len(warnings) <= 2 and "max_connections = 20" in warnings[0], warnings
    assert daemon.stop() == 0


@pytest.mark.timeout(120)
def test_out_of_file_descriptors_neither_floods_the_log_nor_spins_and_health_answers(daemon: DaemonProcess) -> None:
    daemon.start()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (128, hard))  # the unit's LimitNOFILE, scaled down
    log_before = len(daemon.logs())
    slow: list[socket.socket] = []
    try:
        for _ in range(300):  # more than the daemon may open
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", daemon.port))
            slow.append(sock)
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        cpu_before, started = _cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(3)  # a window to measure the daemon in, while the slow clients hold on
        cpu_used, window = _cpu_seconds(daemon.pid) - cpu_before, time.monotonic() - started
        assert cpu_used < window / 2, f"the daemon used {cpu_used:.2f}s of CPU in {window:.2f}s: a busy loop"
        wait_for(lambda: _health(daemon), timeout=60, interval=0.5, what="/health answering")
    finally:
        for sock in slow:
            sock.close()
    grown = len(daemon.logs()) - log_before
    assert grown < 4000, f"{grown} bytes of log:\n{daemon.logs()[log_before:log_before + 3000]}"
    assert daemon.alive()
    assert daemon.stop() == 0
