"""The real daemon with a `processes = 2` stage: the process tree after a drain and after SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from pipelined.workers.proctree import descendant_pids, is_running

from .conftest import USERLAND

PIPELINE = """
python_path = ["{code}"]
[[stage]]
name = "src"
kind = "producer"
call = "wstages:items_of"
auto_start = false
[[stage]]
name = "work"
call = "wstages:{work}"
processes = 2
process_mode = "{mode}"
[[stage]]
name = "sink"
kind = "consumer"
call = "wstages:collect"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_drain_and_sigterm_leave_no_worker_process(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "pool.toml").write_text(PIPELINE.format(code=USERLAND, work="pid_of", mode="pool"))
    (conf / "perfork.toml").write_text(PIPELINE.format(code=USERLAND, work="pid_of", mode="fork_per_item"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pipelined", "run", "--conf-dir", str(conf), "--state-dir", str(tmp_path / "state"),
         "--listen", f"127.0.0.1:{port}", "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait(lambda: _healthy(base))
        for name in ("pool", "perfork"):
            run = httpx.post(f"{base}/pipelines/{name}/stages/src/trigger", json={"args": {"values": [1, 2, 3]}}).json()
            _wait(lambda name=name, run=run: httpx.get(f"{base}/pipelines/{name}/runs/{run['run']}").json()["state"]
                  == "completed")
        workers = [p for p in descendant_pids(daemon.pid)]
        assert len(workers) >= 3  # pool workers, the zygote (and the forkserver helpers)
        drained = httpx.post(f"{base}/pipelines/pool/drain", params={"wait": "true", "timeout": "10"}, timeout=15)
        assert drained.status_code == 200
        still = set(descendant_pids(daemon.pid))
        assert still and still < set(workers)  # fork_per_item's zygote still runs; the pool's workers are gone
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.stderr.read().decode() if daemon.stderr else ""
        _wait(lambda: not any(is_running(pid) for pid in workers), 5.0)
    finally:
        if daemon.poll() is None:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(5)
