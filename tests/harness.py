"""Drive a REAL `python -m pipelined run` subprocess from tests.

    def test_something(daemon):                       # the fixture from tests/conftest.py
        daemon.write_module("mystages", "def produce(): ...")
        daemon.write_pipeline("orders", ORDERS_TOML)
        daemon.start()                                # waits for /health (and /ready by default)
        r = daemon.client.get("/pipelines")
        assert daemon.stop() == 0                     # SIGTERM, wait, exit status

Every wait polls a condition against a deadline (`wait_for`); nothing sleeps on luck.
`modules_dir` is on the daemon's PYTHONPATH, so test callables written with `write_module`
import as `module:function`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "daemon"

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not become true before its deadline."""


def write_token(path: Path, token: str) -> Path:
    """A bearer-token file the daemon accepts: private to its owner (0600), as the daemon demands."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Call `condition` until it returns something truthy (returned) or `timeout` passes (raises).

    Exceptions raised by `condition` count as "not yet"; the last one is chained to the timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = condition()
            if last_value:
                return last_value
        except Exception as exc:  # noqa: BLE001 - "not yet" until the deadline
            last_error = exc
        if time.monotonic() >= deadline:
            label = what or getattr(condition, "__name__", "condition")
            raise WaitTimeout(
                f"{label} not true after {timeout:.1f}s (last value {last_value!r})"
            ) from last_error
        time.sleep(interval)


class DaemonProcess:
    """One daemon subprocess with its own conf dir, state dir, port and captured stderr."""

    def __init__(
        self,
        base_dir: Path,
        *,
        watch: bool = False,
        settings: str | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        listen: str | None = None,
        log_format: str = "text",
        log_level: str = "info",
        token: str | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.conf_dir = self.base_dir / "conf.d"
        self.state_dir = self.base_dir / "state"
        self.modules_dir = self.base_dir / "modules"
        for d in (self.conf_dir, self.state_dir, self.modules_dir):
            d.mkdir(parents=True, exist_ok=True)
        # always a file of our own: never pick up a host's /etc/pipelined/pipelined.toml
        self.settings_file = self.base_dir / "pipelined.toml"
        self.token = token
        self.tls_ca = tls_ca  # the daemon serves https; verify it with this CA file
        if token is not None:  # a private token file, named in [api] (added if the settings lack it)
            token_file = write_token(self.base_dir / "api.token", token)
            line = f'token_file = "{token_file}"\n'
            settings = settings or ""
            settings = (
                settings.replace("[api]\n", "[api]\n" + line, 1)
                if "[api]\n" in settings
                else f"{settings}\n[api]\n{line}"
            )
        self.settings_file.write_text(settings or "")
        self.watch = watch
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.listen = listen or f"127.0.0.1:{self.port}"
        self.log_format = log_format
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = self.base_dir / "daemon.stderr"
        self._stderr_file: Any = None
        self._client: httpx.Client | None = None
        self.returncode: int | None = None

    @staticmethod
    def package_dir() -> Path:
        return PACKAGE_DIR

    # -- files ---------------------------------------------------------------------------
    def write_pipeline(self, name: str, text: str, *, atomic: bool = True) -> Path:
        """Write `<conf_dir>/<name>.toml` (temp file + rename unless atomic=False)."""
        path = self.conf_dir / f"{name}.toml"
        if atomic:
            fd, tmp = tempfile.mkstemp(dir=self.conf_dir, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        else:
            path.write_text(text)
        return path

    def remove_pipeline(self, name: str) -> None:
        (self.conf_dir / f"{name}.toml").unlink()

    def write_module(self, name: str, code: str) -> Path:
        """Write `<modules_dir>/<name>.py`, importable by the daemon as `name`."""
        path = self.modules_dir / f"{name}.py"
        path.write_text(code)
        return path

    # -- process -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://{self.listen}"

    @property
    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Bearer <token>` when the daemon has a token, else nothing."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            headers = self.auth_headers
            if self.listen.startswith("unix:"):
                transport = httpx.HTTPTransport(uds=self.listen[len("unix:") :])
                self._client = httpx.Client(
                    base_url="http://pipelined", transport=transport, timeout=30, headers=headers
                )
            else:
                verify: Any = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else True
                self._client = httpx.Client(base_url=self.url, timeout=30, headers=headers, verify=verify)
        return self._client

    @property
    def pid(self) -> int:
        assert self.proc is not None, "daemon not started"
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "pipelined", "run",
            "--conf-dir", str(self.conf_dir),
            "--state-dir", str(self.state_dir),
            "--listen", self.listen,
            "--log-format", self.log_format,
            "--log-level", self.log_level,
        ]  # fmt: skip
        cmd += ["--config", str(self.settings_file)]
        if not self.watch:
            cmd.append("--no-watch")
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.pop("JOURNAL_STREAM", None)
        env.pop("CREDENTIALS_DIRECTORY", None)  # never a token of the machine running the tests
        if self.token is not None:
            env["PIPELINED_TOKEN"] = self.token  # for `pipelined` client commands run with this env
        paths = [str(self.modules_dir), str(PACKAGE_DIR)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self, *, wait: str | None = "ready", timeout: float = 20.0) -> DaemonProcess:
        """Start the subprocess; wait for "health", "ready" or nothing (None)."""
        assert self.proc is None, "already started"
        self._stderr_file = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in _reap
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.base_dir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._stderr_file,
            stderr=self._stderr_file,
        )
        if wait is not None:
            self.wait_for(lambda: self._endpoint_ok("/health"), timeout, what="GET /health == 200")
            if wait == "ready":
                self.wait_for(lambda: self._endpoint_ok("/ready"), timeout, what="GET /ready == 200")
        return self

    def _endpoint_ok(self, path: str) -> bool:
        self._raise_if_exited()
        try:
            return self.client.get(path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _raise_if_exited(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited with status {self.proc.returncode}; stderr:\n{self.logs()[-4000:]}"
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeout(
                f"daemon still running after {timeout}s; stderr:\n{self.logs()[-4000:]}"
            ) from exc
        self._reap()
        return code

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM) and wait for the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.returncode = self.proc.returncode
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- observation ---------------------------------------------------------------------
    def logs(self) -> str:
        """Everything the daemon wrote to stderr/stdout so far."""
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(
        self, condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
    ) -> T:
        """`wait_for`, but failing at once (with the daemon's stderr) if the daemon exits."""

        def checked() -> T:
            self._raise_if_exited()
            return condition()

        try:
            return wait_for(checked, timeout, interval, what or getattr(condition, "__name__", ""))
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n--- daemon stderr (tail) ---\n{self.logs()[-4000:]}") from exc

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        self.wait_for(lambda: text in self.logs(), timeout, what=f"log line containing {text!r}")

    def pipeline(self, name: str) -> dict[str, Any]:
        r = self.client.get(f"/pipelines/{name}")
        r.raise_for_status()
        return dict(r.json())

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            r = self.client.get(f"/pipelines/{name}")
            if r.status_code == 200 and r.json().get("state") == state:
                return dict(r.json())
            return None

        return self.wait_for(reached, timeout, what=f"pipeline {name} state == {state}")

    def wait_version(self, name: str, version: str, timeout: float = 10.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            r = self.client.get(f"/pipelines/{name}")
            body = r.json() if r.status_code == 200 else {}
            if body.get("version") == version and body.get("state") == "running":
                return dict(body)
            return None

        return self.wait_for(reached, timeout, what=f"pipeline {name} running version {version}")

    def close(self) -> None:
        """Tear down: SIGTERM, then SIGKILL if it will not exit."""
        if self.alive():
            try:
                self.stop(timeout=15)
            except WaitTimeout:
                self.kill()
        self._reap()


def file_version(path: Path) -> str:
    """What the daemon reports as `version`: the first 12 hex digits of the file's SHA-256."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
