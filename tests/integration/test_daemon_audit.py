"""Audit of spec/daemon.md against a real daemon: CLI forms, logging, startup details."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable

import orjson

from harness import DaemonProcess

STAGES = '''
import logging
import warnings


def produce(n=3):
    logging.getLogger("user").info("producing %s", n)
    yield from range(n)


async def anoisy(x):
    logging.getLogger("user").warning("async user log %s", x)
    return x


def noisy(x):
    logging.getLogger("user").warning("user log %s", x)
    warnings.warn("a user warning")
    return x


def sink(x):
    pass
'''

NOISY = """
[[stage]]
name = "src"
kind = "producer"
call = "auditstages:produce"
auto_start = false

[[stage]]
name = "in_thread"
call = "auditstages:noisy"

[[stage]]
name = "in_process"
call = "auditstages:noisy"
processes = 1

[[stage]]
name = "in_async"
call = "auditstages:anoisy"

[[stage]]
name = "out"
kind = "consumer"
call = "auditstages:sink"
"""


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelined", *args], capture_output=True, text=True, timeout=timeout,
        env={"PYTHONPATH": str(DaemonProcess.package_dir())},
    )  # fmt: skip


def test_client_options_before_or_after_the_subcommand(daemon: DaemonProcess) -> None:
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("noisy", NOISY)
    daemon.start()
    api = f"http://{daemon.listen}"
    for args in (
        ("--api", api, "status"),
        ("status", "--api", api),
        ("--api", api, "--json", "status"),
        ("--json", "status", "--api", api),
    ):
        done = cli(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "noisy" in done.stdout
        if "--json" in args:
            assert orjson.loads(done.stdout)[0]["name"] == "noisy"
        else:
            assert done.stdout.split()[:2] == ["NAME", "STATE"]
    # given after the subcommand, it wins over the one before it
    done = cli("--api", "http://127.0.0.1:1", "status", "--api", api)
    assert done.returncode == 0, done.stderr
    done = cli("--api", "http://127.0.0.1:1", "status")
    assert done.returncode == 1 and "cannot reach" in done.stderr
    assert daemon.stop() == 0


def test_json_log_format_every_line_is_json_even_python_warnings(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(log_format="json")
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("noisy", NOISY)
    daemon.start()
    run = daemon.client.post("/pipelines/noisy/stages/src/trigger?wait=true", json={"args": {"n": 2}}).json()
    assert run["state"] == "completed", run
    assert daemon.stop() == 0
    lines = daemon.logs().splitlines()
    entries = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    warned = {e.get("stage") for e in entries if e["logger"] == "py.warnings"}
    assert warned == {"in_thread", "in_process"}, entries
    user = [e for e in entries if e["logger"] in ("py.warnings", "user")]
    assert {e["stage"] for e in user} == {"src", "in_thread", "in_process", "in_async"}
    assert all(e["pipeline"] == "noisy" and e["run"] == run["run"] for e in user), user


def test_startup_freezes_the_objects_alive_then() -> None:
    from pipelined.supervisor import freeze_startup_objects

    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
