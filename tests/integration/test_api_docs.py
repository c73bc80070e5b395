"""Every ```sh example in docs/api.md runs as written against a real daemon (TCP, and a Unix socket)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import REPO_ROOT, DaemonProcess, write_token

DOC = REPO_ROOT / "docs" / "api.md"
TOKEN = "docs-example-token"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def examples() -> list[str]:
    return SH_BLOCK.findall(DOC.read_text())


def start_daemon(base: Path, listen: str | None) -> DaemonProcess:
    token_file = base / "api.token"
    base.mkdir(parents=True, exist_ok=True)
    write_token(token_file, TOKEN)
    daemon = DaemonProcess(
        base, settings=f'[api]\ntoken_file = "{token_file}"\nconfig_write = true\n', listen=listen
    )
    daemon.write_pipeline("numbers", (REPO_ROOT / "conf.d" / "numbers.toml").read_text())
    daemon.start()
    daemon.client.headers["Authorization"] = f"Bearer {TOKEN}"
    return daemon


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    base = tmp_path_factory.mktemp("docs")
    tcp = start_daemon(base / "tcp", None)
    try:
        unix = start_daemon(base / "unix", f"unix:{base / 'unix' / 'api.sock'}")
        try:
            yield tcp, unix
        finally:
            unix.close()
    finally:
        tcp.close()


def test_the_doc_has_an_example_for_every_endpoint() -> None:
    text = "\n".join(examples())
    for needle in ("/health", "/ready", '$API/pipelines"', "/pipelines/numbers\"", "/trigger", "/runs/$RUN",
                   '/runs"', "/drain", "/start", "/pipelines/numbers/stats", '$API/stats"', "/metrics",
                   "/dead-letters", "/graph", "/reload", "-X PUT", "-X DELETE", "--unix-socket",
                   "/schema/openapi.json", "Authorization: Bearer $TOKEN"):  # fmt: skip
        assert needle in text, needle


def test_every_example_runs(daemons: tuple[DaemonProcess, DaemonProcess], tmp_path: Path) -> None:
    tcp, unix = daemons
    env = {**os.environ, "API": tcp.url, "TOKEN": TOKEN, "SOCK": unix.listen[len("unix:") :]}
    blocks = examples()
    assert len(blocks) >= 10
    failures = []
    for block in blocks:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if done.returncode != 0 or "Traceback" in done.stdout:
            failures.append(
                f"exit {done.returncode}:\n{block}--- stderr: {done.stderr}--- stdout: {done.stdout[-500:]}"
            )
    assert not failures, "\n\n".join(failures)
    for daemon in (tcp, unix):
        assert daemon.client.get("/health").json() == {"status": "ok"}
    assert tcp.client.get("/pipelines/numbers").json()["state"] == "running"
