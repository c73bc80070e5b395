"""A token only a Latin-1 client could send: the daemon used to accept a token file holding
`tökén` (its header compare decodes Latin-1, so curl's and `pipelined`'s UTF-8 were 401 forever,
with nothing saying why). A token is printable ASCII: the daemon refuses anything else at start
(exit 2 naming the file), the client commands refuse it in one line before sending."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import PACKAGE_DIR, DaemonProcess, write_token


@pytest.mark.parametrize("token", ["tökén", "tab\there", "bell\x07"])
def test_a_token_file_with_a_character_a_header_cannot_carry_is_refused(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, token: str
) -> None:
    token_file = write_token(tmp_path / "api.token", token)
    daemon = make_daemon(settings=f'[api]\ntoken_file = "{token_file}"\n')
    daemon.start(wait=None)
    assert daemon.wait_exit(20) == 2, daemon.logs()
    assert f"{token_file} holds {next(c for c in token if not ' ' <= c <= '~')!r}" in daemon.logs()
    assert "printable ASCII" in daemon.logs()


def test_a_printable_ascii_token_with_symbols_works(make_daemon: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    token = "a-Z_0.9~+/=!$%&'()*,;:@[]{}"  # everything a token may hold, a space aside
    daemon = make_daemon(settings=f'[api]\ntoken_file = "{write_token(tmp_path / "api.token", token)}"\n')
    daemon.start()
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR), "PIPELINED_TOKEN": token}
    done = subprocess.run([sys.executable, "-m", "pipelined", "status", "--api", daemon.url], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "no pipelines loaded\n", done.stderr


@pytest.mark.parametrize("source", ["env", "file"])
@pytest.mark.parametrize("token", ["tök€n", "a\nb"])
def test_the_client_refuses_such_a_token_in_one_line(tmp_path: Path, source: str, token: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR)}
    args = ["--api", "http://127.0.0.1:9"]  # never reached: refused before sending
    if source == "env":
        env["PIPELINED_TOKEN"] = token
    else:
        args += ["--token-file", str(write_token(tmp_path / "t", token))]
    for command in (["status"], ["runs", "orders"], ["top", "--once"]):
        done = subprocess.run([sys.executable, "-m", "pipelined", *command, *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert "printable ASCII" in done.stderr and "cannot reach" not in done.stderr, done.stderr
