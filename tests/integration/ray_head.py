"""A Ray head node of a test's own: `ray start --head` on 127.0.0.1, its own port and temp dir.

    head = RayHead()                  # a short temp dir (Ray's socket paths must stay < 108 chars)
    head.start()                      # blocks until `ray start` returned (GCS and raylet up)
    head.address                      # "127.0.0.1:<port>" for the daemon's [ray] address
    head.client_env                   # what a driver needs: the head's token, loopback node IP
    head.processes()                  # PIDs of every process of this head (GCS, raylet, workers...)
    head.kill()                       # SIGKILL exactly those, until none is left

Every process of the head carries `PIPELINED_TEST_RAY_HEAD=<its dir>` in its environment (Ray's
processes inherit it from `ray start`, workers from the raylet), so it is found and stopped by
its own PIDs: never a machine-wide `ray stop` (other tests' Ray instances may be running).

`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes Ray take 127.0.0.1 as the node's IP instead of the
machine's address: the head advertises and binds loopback only, and all the test's traffic stays
on 127.0.0.1. A driver that connects must run with the same setting (`client_env`), or Ray
rewrites "127.0.0.1" into the machine's address. Token authentication is on, with a token file
in the head's dir.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import free_port

MARK = "PIPELINED_TEST_RAY_HEAD"


class RayHead:
    def __init__(self, num_cpus: int = 2, object_store: str = "80000000") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
        self.port = free_port()
        self.num_cpus = num_cpus
        self.object_store = object_store
        self.token = self.dir / "auth_token"
        fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        self.log = self.dir / "start.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def start(self, timeout: float = 240.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(self.client_env, RAY_USAGE_STATS_ENABLED="0", **{MARK: str(self.dir)})
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
            "--port", str(self.port), "--node-ip-address", "127.0.0.1",
            "--temp-dir", str(self.dir / "t"), "--num-cpus", str(self.num_cpus),
            "--object-store-memory", self.object_store,
            "--include-dashboard=false", "--disable-usage-stats",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            self.kill()
            raise RuntimeError(f"ray start --head exited {done.returncode}: {self.log.read_text()[-3000:]}")

    def processes(self) -> list[int]:
        mark = f"\0{MARK}={self.dir}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if mark in b"\0" + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
        return found

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL every process of this head (again while the raylet still spawns some)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the Ray head still alive: {pids}")
            time.sleep(0.1)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
