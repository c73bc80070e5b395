"""A Ray stage under the hardened unit, in a real systemd (the lab of test_systemd_service.py).

One slow test: `tools/install --with ray` from a wheelhouse (Ray is a ~70 MB wheel), then
- the default unit alone: the daemon starts, the Ray pipeline fails with an error naming the drop-in
  (ProcSubset=pid hides /proc/stat from Ray), every other pipeline runs;
- with systemd/pipelined-ray.conf: `systemctl start` brings the embedded Ray up, a run goes
  through the Ray stage item for item, every port of the instance listens on loopback only, and
  `systemctl stop` exits cleanly and leaves no process behind.
The lab's network namespace gets a non-loopback address and a default route first, like a real
host: Ray would advertise that address, which the unit's IPAddressAllow=localhost refuses, if the
embedded instance did not keep to 127.0.0.1. Skips where the lab cannot boot.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_service import WHEEL_CACHE
from lab_service import api as _api
from lab_service import show as _show
from systemd_lab import SystemdLab

REPO = Path(__file__).resolve().parents[2]
STATE = "/var/lib/pipelined"

pytestmark = pytest.mark.timeout(900)

CODE = '''
import os

def numbers(n: int = 10):
    yield from range(n)

def double(item):
    return {"item": item * 2, "pid": os.getpid()}

def record(item, path: str):
    import json
    with open(path, "a") as f:
        f.write(json.dumps(item) + "\\n")
'''

PIPELINE = f"""
python_path = ["../code"]
[[stage]]
name = "src"
kind = "producer"
call = "raylab:numbers"
auto_start = false
[[stage]]
name = "double"
call = "raylab:double"
executor = "ray"
[[stage]]
name = "sink"
kind = "consumer"
call = "raylab:record"
args = {{ path = "{STATE}/raylab.jsonl" }}
"""


def _ray_wheelhouse() -> Path:
    """Wheels of pipelined[ray] and every dependency (the lab has no network); cached by pyproject."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    house = WHEEL_CACHE / f"wheels-ray-{key}"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house)]
    if not (house / ".complete").exists():
        done = subprocess.run([*pip, f"{REPO}[ray]"], capture_output=True, text=True, timeout=900, cwd="/tmp")
        if done.returncode != 0:
            pytest.skip(f"cannot build the wheelhouse (offline?): {done.stderr[-500:]}")
        (house / ".complete").write_text("")
    for old in house.glob("pipelined-*.whl"):
        old.unlink()
    done = subprocess.run([*pip, "--no-deps", str(REPO)], capture_output=True, text=True, timeout=300, cwd="/tmp")
    assert done.returncode == 0, done.stderr
    return house


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdLab]:
    reason = SystemdLab.unavailable()
    if reason:
        pytest.skip(f"systemd lab unavailable: {reason}")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 to build the server venv from")
    house = _ray_wheelhouse()
    lab = SystemdLab(tmp_path_factory.mktemp("raylab"))
    try:
        lab.boot()
    except Exception as exc:  # noqa: BLE001 - a machine where the lab cannot boot skips
        lab.shutdown()
        pytest.skip(f"systemd lab did not boot: {exc}")
    try:
        lab.run("env", f"PIPELINED_WHEELS={house}", str(REPO / "tools" / "install"), "--with", "ray",
                check=True, timeout=600)
        yield lab
    finally:
        lab.shutdown()


def _like_a_real_host(lab: SystemdLab) -> None:
    """A non-loopback address and a default route in the lab's network namespace."""
    lab.run("sh", "-c", "ip link add lab0 type veth peer name lab1 && ip addr add 192.0.2.77/24 dev lab0 "
            "&& ip link set lab0 up && ip link set lab1 up && ip route add default via 192.0.2.1 dev lab0 onlink",
            check=True)


def _listening(lab: SystemdLab) -> list[str]:
    """Local addresses of the listening TCP sockets of the unit's processes (the API's included)."""
    cgroup = lab.run("systemctl", "show", "-p", "ControlGroup", "--value", "pipelined").stdout.strip()
    procs = set(lab.run("cat", f"/sys/fs/cgroup{cgroup}/cgroup.procs", check=True).stdout.split())
    assert len(procs) > 3, procs  # the daemon, the driver, Ray's GCS, raylet, workers...
    return [line.split()[3] for line in lab.run("ss", "-ltnpH").stdout.splitlines()
            if any(f"pid={pid}," in line for pid in procs)]


def test_a_ray_stage_under_the_hardened_unit(lab: SystemdLab) -> None:
    dropin = "/etc/systemd/system/pipelined.service.d/ray.conf"
    assert lab.path(dropin).read_text() == (REPO / "systemd" / "pipelined-ray.conf").read_text()
    _like_a_real_host(lab)
    lab.write("/etc/pipelined/code/raylab.py", CODE)
    lab.write("/etc/pipelined/conf.d/raylab.toml", PIPELINE)
    settings = lab.path("/etc/pipelined/pipelined.toml").read_text()
    lab.write("/etc/pipelined/pipelined.toml", settings + '\n[ray]\nobject_store_memory = "80MiB"\n')

    # the default unit alone: Ray cannot start there, the error says what to install; the rest runs
    saved = lab.path(dropin).read_text()
    lab.run("rm", dropin, check=True)
    lab.run("systemctl", "daemon-reload", check=True)
    lab.run("systemctl", "start", "pipelined", check=True, timeout=300)
    pipelines = {p["name"]: p for p in _api(lab, "/pipelines")[1]}  # type: ignore[union-attr]
    assert pipelines["raylab"]["state"] == "failed", pipelines["raylab"]
    assert "/proc/stat" in pipelines["raylab"]["error"] and "tools/install --with ray" in pipelines["raylab"]["error"]
    assert [p for p in pipelines.values() if p["state"] != "running" and p["name"] != "raylab"] == []
    lab.run("systemctl", "stop", "pipelined", check=True, timeout=120)

    # with the drop-in: start blocks until the embedded Ray and the actor are up
    lab.write(dropin, saved)
    lab.run("systemctl", "daemon-reload", check=True)
    lab.run("systemctl", "start", "pipelined", check=True, timeout=330)
    assert _show(lab, "ActiveState") == "active"
    detail = _api(lab, "/pipelines/raylab")[1]
    assert detail["state"] == "running", detail  # type: ignore[index]
    code, run = _api(lab, "/pipelines/raylab/stages/src/trigger?wait=true&timeout=120", method="POST")
    assert code == 200 and run["state"] == "completed", run  # type: ignore[index]
    rows = [json.loads(line) for line in lab.path(f"{STATE}/raylab.jsonl").read_text().splitlines()]
    assert sorted(row["item"] for row in rows) == [i * 2 for i in range(10)]
    main_pid = int(_show(lab, "MainPID"))
    assert {row["pid"] for row in rows}.isdisjoint({main_pid})  # ran in the actor, not the daemon
    stats = _api(lab, "/pipelines/raylab/stats")[1]["stages"]["double"]  # type: ignore[index]
    assert stats["executor"] == "ray" and stats["replicas"] == {"alive": 1, "wanted": 1}

    addresses = _listening(lab)
    assert len(addresses) >= 4, addresses  # the API, the GCS, the raylet, the driver, the actor...
    assert [a for a in addresses if not a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))] == [], addresses

    lab.run("systemctl", "stop", "pipelined", check=True, timeout=120)
    assert _show(lab, "Result") == "success" and _show(lab, "ExecMainStatus") == "0"
    left = lab.run("ps", "-eo", "pid=,comm=").stdout.splitlines()
    assert [p for p in left if any(name in p.lower() for name in ("ray", "gcs_server", "pipelined"))] == [], left
