"""Is a Ray cluster there at all, and why did the driver go: the daemon's side, without Ray.

    probe("10.0.0.5:6379")        # None, or "nothing listens at 10.0.0.5:6379 (connection refused)"
    last_error(driver_log)        # the last error line Ray wrote to <state_dir>/ray/driver.log

`ray.init(address=...)` against an address where nothing listens retries for minutes (about 40 s
per attempt) before it gives up; a TCP connect answers in milliseconds. So before a driver is
started for a cluster, the daemon tries its GCS port: refused or unroutable fails that start at
once with a clear error (the pipeline's start fails, the old version stays on a reload). A port
that accepts the connection is left to `ray.init` to judge (a wrong token, another service).
"""

from __future__ import annotations

import socket
from pathlib import Path

PROBE_TIMEOUT = 5.0
TAIL_BYTES = 16384
RAY_CLIENT_PORT = 10001
MAX_LINE = 300


def address_of(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port", "[v6]:port" or "ray://host[:port]"; None for "auto" or ""."""
    default_port = None
    if address.startswith("ray://"):
        address = address[len("ray://"):].split("/", 1)[0]
        default_port = RAY_CLIENT_PORT
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, ""
    if not host or host == "auto":
        return None
    if port.isdigit():
        return host, int(port)
    return (host, default_port) if default_port else None


def probe(address: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why nothing can be reached at `address` (None: a TCP connection was accepted, or there
    is no host:port to try)."""
    target = address_of(address)
    if target is None:
        return None
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return f"nothing listens at {host}:{port} (connection refused)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def last_error(log_file: Path, since: int = 0) -> str | None:
    """The last error Ray or the driver wrote to `log_file` after offset `since`: an " E " / " C "
    line of Ray's C++ logging without its prefix, or a Python exception's last line; None when
    there is none."""
    try:
        with open(log_file, "rb") as fh:
            end = fh.seek(0, 2)
            fh.seek(max(since, end - TAIL_BYTES))
            tail = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        text = line.strip()
        if text.startswith("[") and (" E " in text[:40] or " C " in text[:40]):
            message = text.split("] ", 1)[-1]
            if ": " in message and (".cc:" in message.split(": ", 1)[0] or ".h:" in message.split(": ", 1)[0]):
                message = message.split(": ", 1)[1]
            return _short(message)
        head = text.split(": ", 1)[0]
        if head.endswith(("Error", "Exception", "Exit")) and head.replace(".", "").isidentifier():
            return _short(text)
    return None


def _short(text: str) -> str:
    sentences = text.split(". ")
    short = ". ".join(sentences[:2])
    return short if len(short) <= MAX_LINE else short[: MAX_LINE - 3] + "..."
