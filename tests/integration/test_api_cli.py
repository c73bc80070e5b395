"""The `pipelined` client commands against a real daemon, run as subprocesses (as systemd runs reload)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from harness import PACKAGE_DIR, DaemonProcess, write_token

TOKEN = "cli-token"
STAGES = """
def produce(n=2):
    yield from range(n)

def sink(x):
    pass
"""
ORDERS = """
[[stage]]
name = "read"
kind = "producer"
call = "clistages:produce"
auto_start = false

[[stage]]
name = "store"
kind = "consumer"
call = "clistages:sink"
"""


def pipelined(daemon: DaemonProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR), "PIPELINED_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "pipelined", *argv, "--api", daemon.url],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_client_commands_against_a_real_daemon(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    write_token(token_file, TOKEN)
    daemon = DaemonProcess(tmp_path, settings=f'[api]\ntoken_file = "{token_file}"\n')
    daemon.write_module("clistages", STAGES)
    daemon.write_pipeline("orders", ORDERS)
    daemon.start()
    try:
        status = pipelined(daemon, "status")
        assert status.returncode == 0 and "orders" in status.stdout and "running" in status.stdout

        trigger = pipelined(daemon, "trigger", "orders", "read", "--arg", "n=3", "--wait", "--json")
        assert trigger.returncode == 0, trigger.stderr
        run = orjson.loads(trigger.stdout)
        assert run["state"] == "completed" and run["items"]["produced"] == 3

        graph = pipelined(daemon, "graph", "--remote", "orders", "--format", "dot")
        assert graph.returncode == 0 and graph.stdout.startswith("digraph"), graph.stderr

        drained = pipelined(daemon, "drain", "orders", "--wait", "--timeout", "20")
        assert drained.returncode == 0 and drained.stdout.strip() == "orders: drained"
        assert pipelined(daemon, "start", "orders").stdout.strip() == "orders: running"

        ok = pipelined(daemon, "reload")
        assert ok.returncode == 0 and "unchanged: orders" in ok.stdout
        daemon.write_pipeline("broken", "[[stage]]\nname = 1\n")
        failed = pipelined(daemon, "reload")
        assert failed.returncode == 1
        assert "pipelined reload: broken failed to reload:" in failed.stderr
        assert "Traceback" not in failed.stderr

        stats = pipelined(daemon, "stats", "orders")
        assert stats.returncode == 0 and "orders: running" in stats.stdout
    finally:
        daemon.close()
    gone = pipelined(daemon, "status")
    assert gone.returncode == 1 and "cannot reach the pipelined daemon" in gone.stderr
