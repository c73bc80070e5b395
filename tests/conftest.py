"""Shared fixtures: `daemon` (a factory-backed real daemon subprocess) and `free_port`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DaemonProcess, free_port  # noqa: E402


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests (tests/browser/) never share a process with the others: Playwright's sync API
    runs an event loop of its own that breaks asyncio-based tests run after it. When a session
    would hold both, the browser tests are deselected (run them with `pytest -m browser`;
    tools/test does both)."""
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser and len(browser) < len(items):
        items[:] = [item for item in items if not item.get_closest_marker("browser")]
        config.hook.pytest_deselected(items=browser)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """An unstarted DaemonProcess in tmp_path (no watcher); call `.start()` after writing files.

    Stopped (SIGTERM, then SIGKILL) at teardown if the test left it running.
    """
    proc = DaemonProcess(tmp_path)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory for DaemonProcess with options (watch=True, settings=..., env=...): each its own dir."""
    made: list[DaemonProcess] = []

    def make(**options: Any) -> DaemonProcess:
        proc = DaemonProcess(tmp_path / f"d{len(made)}", **options)
        made.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in made:
            proc.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key (0600), made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key.chmod(0o600)
    return cert, key
