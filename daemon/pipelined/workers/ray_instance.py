"""The embedded Ray instance's files, environment and processes (workers/ray_cluster.py uses these).

    env = driver_env(dict(os.environ), ray_dir, embedded=True)   # the Ray driver's environment
    temp_dir(ray_dir)                 # <state_dir>/ray/tmp, or a short symlink to it
    kill_leftovers(pgid, ray_dir)     # after the driver: whatever of the instance is left
    connect_hint(error)               # what to do about a known connect error ("" otherwise)

Everything of an embedded instance lives under `<state_dir>/ray/` (0700): its token, temp dir,
logs, and HOME where the daemon has none. Every process of it carries INSTANCE_MARK in its
environment, so the daemon finds them by their own PIDs, never by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import tempfile
from pathlib import Path

MAX_SOCKET_DIR = 40  # Ray puts sockets 60 characters below its temp dir; AF_UNIX paths stop at 107
INSTANCE_MARK = "PIPELINED_RAY_DIR"


def driver_env(env: dict[str, str], ray_dir: Path, embedded: bool) -> dict[str, str]:
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env[INSTANCE_MARK] = str(ray_dir)  # inherited by every process of an embedded instance
    env.pop("RAY_ADDRESS", None)
    if embedded:  # private: a token of its own, never the user's ~/.ray/auth_token
        env.pop("RAY_AUTH_TOKEN", None)
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file(ray_dir))
        # Ray's single-machine mode: 127.0.0.1 is the node's IP (not the machine's address), so
        # every port of the instance binds and is advertised on loopback only
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if not _writable_home(env.get("HOME")):  # DynamicUser=, ProtectHome=: Ray writes under HOME
        home = ray_dir / "home"
        home.mkdir(exist_ok=True, mode=0o700)
        env["HOME"] = str(home)
    return env


def token_file(ray_dir: Path) -> Path:
    token = ray_dir / "auth_token"
    if not token.exists() or not token.read_text().strip():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return token


def temp_dir(ray_dir: Path) -> Path:
    """`<state_dir>/ray/tmp`, or a short symlink to it when that path is too long for sockets."""
    real = ray_dir / "tmp"
    real.mkdir(exist_ok=True, mode=0o700)
    if len(str(real)) <= MAX_SOCKET_DIR:
        return real
    digest = hashlib.sha256(str(real).encode()).hexdigest()[:12]
    link = Path(tempfile.gettempdir()) / f"pipelined-ray-{os.getuid()}-{digest}"
    if link.is_symlink() and os.readlink(link) == str(real):
        return link
    with contextlib.suppress(FileNotFoundError):
        if link.is_symlink():
            link.unlink()
    os.symlink(real, link)
    return link


def connect_hint(error: str) -> str:
    """What to do about a connect error whose cause is known."""
    if "/proc/" in error:  # psutil reads /proc/stat, /proc/meminfo: hidden by the unit's ProcSubset=pid
        return (" (under the shipped systemd unit, Ray needs its drop-in: tools/install --with ray "
                "installs pipelined-ray.conf, with ProcSubset=all)")
    if "ray[client]" in error:  # address = "ray://...": `pipelined[ray]` is plain ray, without grpcio
        return (" (a ray:// address uses Ray Client, which pipelined[ray] does not install: install it into "
                "the daemon's environment: pip install 'ray[client]', or give the cluster's GCS address "
                "(host:6379) from a node of the cluster)")
    return ""


def _writable_home(home: str | None) -> bool:
    return bool(home) and os.path.isdir(home or "") and os.access(home or "", os.W_OK)


def kill_leftovers(pgid: int, ray_dir: str) -> None:
    """SIGKILL what an embedded instance left behind its driver: its process group (GCS, raylet,
    agents) and every process whose environment carries this instance's mark (Ray's workers
    run in groups of their own and rename themselves `ray::...`). Only this daemon's processes
    carry the mark: it is the daemon's state dir."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    mark = f"\0{INSTANCE_MARK}={ray_dir}\0".encode()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            environ = b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if mark in environ:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
