"""`pipelined top` against a real daemon process: the live view (Textual's Pilot over the real
HTTP source) sees numbers move while a pipeline runs, triggers and drains through its dialogs,
says so when the daemon stops and recovers when it is back on the same address; `top --once`
is run as a subprocess and its tables parsed; and the command itself in a pseudo-terminal, over a
unix socket with a token (and without it: refused, said, still running)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from harness import PACKAGE_DIR, DaemonProcess
from pipelined.cli.client import Endpoint
from pipelined.cli.main import main
from pipelined.cli.top_app import TopApp
from pipelined.cli.top_source import HttpSource

STAGES = """
import time

def produce(n=300, delay=0.01):
    for i in range(n):
        time.sleep(delay)
        yield i

def work(x):
    time.sleep(0.002)
    return x

def sink(x):
    pass
"""
FLOW = """
[[stage]]
name = "read"
kind = "producer"
call = "topstages:produce"
auto_start = false

[[stage]]
name = "work"
call = "topstages:work"
threads = 2

[[stage]]
name = "store"
kind = "consumer"
call = "topstages:sink"
"""
IDLE = """
[[stage]]
name = "keep"
kind = "consumer"
call = "topstages:sink"
"""


def start(daemon: DaemonProcess) -> DaemonProcess:
    daemon.write_module("topstages", STAGES)
    daemon.write_pipeline("flow", FLOW)
    daemon.write_pipeline("idle", IDLE)
    return daemon.start()


async def until(pilot: Pilot[Any], condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        await pilot.pause(0.05)


def text(app: TopApp, selector: str) -> str:
    return str(app.main.query_one(selector, Static).render())


def stage_row(app: TopApp, stage: str) -> dict[str, str]:
    table = app.main.query_one("#stages", DataTable)
    titles = [str(c.label).strip() for c in table.columns.values()]
    cells = [str(c).strip().lstrip("★ ") for c in table.get_row(stage)]
    return dict(zip(titles, cells, strict=True))


def count(value: str) -> float:
    """'1.2k' → 1200.0 (the live view's short numbers)."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(value[-1:], 1.0)
    return float(value[:-1] if scale != 1.0 else value) * scale


def test_live_view_against_a_real_daemon(tmp_path: Path) -> None:
    daemon = start(DaemonProcess(tmp_path))
    source = HttpSource(Endpoint(daemon.url, None, None))
    again: DaemonProcess | None = None

    async def main() -> None:
        nonlocal again
        app = TopApp(source, pipeline="flow", interval=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: text(app, "#header").startswith("● reachable"), "first frame")
            assert f"● reachable {daemon.url}" in text(app, "#header")
            # trigger through the dialog: a run starts, the numbers move while it runs
            await pilot.press("t", *'{"n": 300}', "enter")
            await until(pilot, lambda: "started run r-" in text(app, "#status"), "trigger answered")
            run_id = text(app, "#status").rsplit(" ", 1)[-1]
            assert daemon.client.get(f"/pipelines/flow/runs/{run_id}").json()["stage"] == "read"
            await until(pilot, lambda: count(stage_row(app, "work")["IN"]) > 0, "work takes items")
            first = count(stage_row(app, "work")["IN"])
            await until(pilot, lambda: count(stage_row(app, "work")["IN"]) > first, "the numbers move")
            await until(pilot, lambda: count(stage_row(app, "work")["ITEMS/S"]) > 0, "a rate while it runs")
            assert "runs: 1 active" in text(app, "#summary")
            # drain through the confirm dialog
            await pilot.press("d", "y")
            await until(pilot, lambda: text(app, "#status") == "drain flow: draining", "drain answered")
            await until(pilot, lambda: "flow: drained" in text(app, "#summary"), "drained", timeout=30)
            # the daemon goes away: said, retried, never a crash
            assert daemon.stop() == 0
            await until(pilot, lambda: "UNREACHABLE" in text(app, "#header"), "unreachable said")
            assert "cannot reach the pipelined daemon" in text(app, "#status")
            polls = app.polls
            await until(pilot, lambda: app.polls >= polls + 3, "still retrying")
            # ... and comes back on the same address
            again = start(DaemonProcess(tmp_path / "again", listen=daemon.listen))
            await until(pilot, lambda: text(app, "#header").startswith("● reachable"), "reachable again")
            assert app.is_running

    try:
        asyncio.run(main())
    finally:
        source.close()
        daemon.close()
        if again is not None:
            again.close()


def top_once(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR)}
    return subprocess.run([sys.executable, "-m", "pipelined", "top", "--once", *argv],
                          env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def test_once_prints_tables_a_script_can_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = start(DaemonProcess(tmp_path))
    try:
        r = daemon.client.post("/pipelines/flow/stages/read/trigger?wait=true", json={"args": {"n": 20, "delay": 0}})
        assert r.status_code == 200 and r.json()["state"] == "completed", r.text
        out = top_once("--api", daemon.url)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith(f"ok reachable {daemon.url}, up ") and ", 2 pipelines, " in lines[0]
        pipelines = {row.split()[0]: row.split() for row in lines[3:5]}
        assert lines[2].split() == ["PIPELINE", "STATE", "RUNS", "DEAD", "ITEMS/S", "STAGES", "BOTTLENECK"]
        assert pipelines["flow"][:2] == ["flow", "running"] and pipelines["idle"][5] == "1"
        # (a bottleneck may be named: the run's work counts in the 60 s window)
        start_at = next(i for i, line in enumerate(lines) if line.startswith("flow: running, runs: 0 active, 1 started"))
        assert "sort:" not in lines[start_at]  # pipeline order, the default
        header, *rows = lines[start_at + 1 : start_at + 5]
        assert header.split() == ["STAGE", "STATE", "IN", "OUT", "ITEMS/S", "FAILED", "DEAD", "QUEUE", "BUSY"]
        by_stage = {row.split()[0].lstrip("*"): row.split() for row in rows}
        assert by_stage["read"][3] == "20" and by_stage["work"][2] == "20" and by_stage["store"][2] == "20"
        assert by_stage["work"][7] == "0/1000" and by_stage["work"][8] == "0/2"

        # the same command in this process (cheaper than a subprocess each)
        code, out_text, _ = once_here(capsys, "flow", "--api", daemon.url)
        assert code == 0 and "idle: running" not in out_text and "flow: running" in out_text
        code, out_text, _ = once_here(capsys, "flow", "--json", "--api", daemon.url)
        doc = orjson.loads(out_text)
        assert doc["header"]["reachable"] is True and [s["name"] for s in doc["stages"]["flow"]] == [
            "read", "work", "store"]
        code, _, err = once_here(capsys, "nope", "--api", daemon.url)
        assert code == 1 and "no pipeline named 'nope'" in err
        # the live view needs a terminal (pytest's stdout is not one)
        assert main(["top", "--api", daemon.url]) == 1
        assert "needs a terminal; use --once" in capsys.readouterr().err
    finally:
        daemon.close()
    code, out_text, err = once_here(capsys, "--api", daemon.url)
    assert code == 1 and out_text == ""
    assert err.startswith("pipelined top: cannot reach the pipelined daemon") and err.count("\n") == 1


def once_here(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["top", "--once", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def top_in_terminal(env: dict[str, str], *argv: str, wait_for: tuple[bytes, ...], columns: int = 80) -> bytes:
    """Run `pipelined top ARGV` in a pseudo-terminal (as a user would, the real command path:
    its first poll starts before Textual loads) until everything in `wait_for` was drawn, then
    press q; returns what it drew. It must exit 0 on q."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes `pipelined top` on the terminal
        os.execve(sys.executable, [sys.executable, "-m", "pipelined", "top", *argv],
                  {**env, "TERM": "xterm-256color"})  # fmt: skip
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        drawn = b""
        deadline = time.monotonic() + 30
        while not all(part in drawn for part in wait_for):
            assert time.monotonic() < deadline, f"not drawn in 30 s: {wait_for}; drawn: {drawn[-2000:]!r}"
            if select.select([fd], [], [], 0.1)[0]:
                drawn += os.read(fd, 65536)
        os.write(fd, b"q")
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "q did not quit"
            if select.select([fd], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    drawn += os.read(fd, 65536)
        assert os.waitstatus_to_exitcode(status) == 0, drawn[-2000:]
        return drawn
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_top_in_a_terminal_over_a_unix_socket_with_a_token(tmp_path: Path) -> None:
    socket = tmp_path / "api.sock"
    daemon = start(DaemonProcess(tmp_path, listen=f"unix:{socket}", token="top-secret-token"))
    env = {k: v for k, v in os.environ.items() if k != "PIPELINED_TOKEN"}
    env["PYTHONPATH"] = str(PACKAGE_DIR)
    try:
        drawn = top_in_terminal({**env, "PIPELINED_TOKEN": "top-secret-token"}, "flow", "--api", f"unix:{socket}",
                                wait_for=(b"reachable unix:", b"flow: running", b"STAGE"), columns=200)  # fmt: skip
        assert b"idle" in drawn and b"UNREACHABLE" not in drawn
        # no token: the daemon refuses, and top says so (not "unreachable") and keeps running
        drawn = top_in_terminal(env, "--api", f"unix:{socket}", wait_for=(b"REFUSED (401)", b"bearer token"), columns=200)
        assert b"UNREACHABLE" not in drawn
    finally:
        daemon.close()
