"""The unit under a real systemd: tools/install, start (blocks until READY=1), reload (same MainPID,
new version live), a broken file failing `systemctl reload` while the service stays active, the
watchdog, the journal fields, and a clean stop with nothing lost. Skips where the lab cannot boot.
"""

from __future__ import annotations

import hashlib
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_service import api, boot_installed, install, show, token
from systemd_lab import SystemdLab

from harness import wait_for

REPO = Path(__file__).resolve().parents[2]
FLOW_STAGES = REPO / "tests" / "integration" / "flow_stages.py"
STATE = "/var/lib/pipelined"

pytestmark = pytest.mark.timeout(600)  # a loaded 2-core machine: tools/install alone can take minutes

FLOW = """
description = "{description}"
python_path = ["../code"]
drain_timeout = "10s"

[[stage]]
name = "source"
kind = "producer"
call = "flow_stages:numbers"
args = {{ out_dir = "{state}", delay = 0.005 }}

[[stage]]
name = "work"
call = "flow_stages:slow"
threads = 2

[[stage]]
name = "sink"
kind = "consumer"
call = "flow_stages:record"
args = {{ out_dir = "{state}" }}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdLab]:
    lab = boot_installed(tmp_path_factory.mktemp("lab"))
    try:
        yield lab
    finally:
        lab.shutdown()


_api, _show = api, show


def _lines(lab: SystemdLab, name: str) -> list[str]:
    try:
        return lab.path(f"{STATE}/{name}").read_text().split()
    except FileNotFoundError:
        return []


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_install_start_reload_watchdog_stop(lab: SystemdLab) -> None:
    started = time.monotonic()
    assert lab.path("/opt/pipelined/bin/pipelined").exists()
    assert lab.path("/usr/local/bin/pipelined").is_symlink()
    assert lab.path("/etc/pipelined/pipelined.toml").exists()
    assert lab.path("/etc/systemd/system/pipelined.service").exists()

    lab.write("/etc/pipelined/code/flow_stages.py", FLOW_STAGES.read_text())
    v1 = FLOW.format(description="v1", state=STATE)
    lab.write("/etc/pipelined/conf.d/flow.toml", v1)
    lab.write("/etc/systemd/system/pipelined.service.d/e2e.conf", "[Service]\nWatchdogSec=3\n")
    settings = lab.path("/etc/pipelined/pipelined.toml").read_text() + "# edited by the operator\n"
    lab.write("/etc/pipelined/pipelined.toml", settings)
    # idempotent: a second install keeps the configuration (and the token) as the operator left it
    first_token = token(lab)
    install(lab)
    assert lab.path("/etc/pipelined/pipelined.toml").read_text() == settings
    assert token(lab) == first_token
    assert lab.path("/etc/pipelined/conf.d/flow.toml").read_text() == v1
    lab.run("systemctl", "daemon-reload", check=True)

    # start blocks until READY=1: the API answers and the first apply is done
    lab.run("systemctl", "start", "pipelined", check=True, timeout=60)
    assert _show(lab, "ActiveState") == "active"
    assert _api(lab, "/ready")[0] == 200
    # a server install is never token-less: the token file is root's, the daemon has it as a credential
    assert stat.S_IMODE(lab.path("/etc/pipelined/api.token").stat().st_mode) == 0o600
    assert _api(lab, "/pipelines", auth=False)[0] == 401
    assert _show(lab, "MemoryMax") == str(2 * 1024**3)
    code, pipelines = _api(lab, "/pipelines")
    assert code == 200 and isinstance(pipelines, list)
    flow = next(p for p in pipelines if p["name"] == "flow")
    # the shipped examples tools/install put into conf.d run under the sandbox too
    assert [p for p in pipelines if p["state"] == "failed"] == []
    assert flow["state"] == "running" and flow["version"] == _sha12(v1), flow
    main_pid = _show(lab, "MainPID")
    wait_for(lambda: len(_lines(lab, "consumed.txt")) > 10, timeout=20, what="items flowing")

    # reload: same process, new version live
    v2 = FLOW.format(description="v2", state=STATE)
    lab.write("/etc/pipelined/conf.d/flow.toml", v2)
    reload = lab.run("systemctl", "reload", "pipelined", timeout=60)
    assert reload.returncode == 0, reload.stderr
    assert _show(lab, "MainPID") == main_pid
    assert _api(lab, "/pipelines/flow")[1]["version"] == _sha12(v2)  # type: ignore[index]

    # a broken file: reload fails, the service and the running version stay
    lab.write("/etc/pipelined/conf.d/flow.toml", v2.replace('name = "work"', 'name = "work"\nthread = 2'))
    broken = lab.run("systemctl", "reload", "pipelined", timeout=60)
    assert broken.returncode != 0
    assert _show(lab, "ActiveState") == "active" and _show(lab, "MainPID") == main_pid
    detail = _api(lab, "/pipelines/flow")[1]
    assert detail["state"] == "running" and detail["version"] == _sha12(v2), detail  # type: ignore[index]
    assert "thread" in detail["error"]  # type: ignore[index]

    # the watchdog is fed: after more than WatchdogSec the same process still runs
    first_ping = int(_show(lab, "WatchdogTimestampMonotonic") or 0)
    wait_for(lambda: int(_show(lab, "WatchdogTimestampMonotonic") or 0) > first_ping, timeout=5, what="watchdog ping")
    time.sleep(3.5)  # longer than WatchdogSec=3: a missing ping would have restarted the service
    assert _show(lab, "MainPID") == main_pid and _show(lab, "NRestarts") == "0"

    # the journal carries the pipeline field
    journal = lab.run("journalctl", "-u", "pipelined", "-o", "json", "--no-pager").stdout
    entries = [json.loads(line) for line in journal.splitlines() if line.startswith("{")]
    assert any(e.get("PIPELINE") == "flow" for e in entries), journal[-2000:]

    # stop: clean exit, nothing lost
    lab.run("systemctl", "stop", "pipelined", check=True, timeout=120)
    assert _show(lab, "ActiveState") == "inactive"
    assert _show(lab, "Result") == "success" and _show(lab, "ExecMainStatus") == "0"
    produced, consumed = _lines(lab, "produced.txt"), _lines(lab, "consumed.txt")
    dead_file = lab.path(f"{STATE}/dead-letters/flow.jsonl")
    dead = [str(json.loads(x)["item"]) for x in dead_file.read_text().splitlines()] if dead_file.exists() else []
    assert len(consumed) == len(set(consumed))
    assert set(produced) == set(consumed) | set(dead)

    # uninstall removes what install added, keeps configuration and state
    lab.run(str(REPO / "tools" / "install"), "--uninstall", check=True, timeout=60)
    assert not lab.path("/opt/pipelined").exists() and not lab.path("/usr/local/bin/pipelined").is_symlink()
    assert not lab.path("/etc/systemd/system/pipelined.service").exists()
    assert lab.path("/etc/pipelined/conf.d/flow.toml").exists()
    assert lab.path(f"{STATE}/consumed.txt").exists()
    assert time.monotonic() - started < 90
