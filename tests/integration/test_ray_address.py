"""`[ray] address` mode through a real daemon: a head node of the test's own (`ray start --head`
on 127.0.0.1, its own port and temp dir; tests/integration/ray_head.py), a pipeline run on it,
the head killed mid-run (by its own PIDs) with the accounting checked through the API; and a
cluster that cannot be reached at start, which fails only the pipelines that need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_head import RayHead

from harness import DaemonProcess, free_port

pytestmark = pytest.mark.timeout(420)

CODE = '''
import json, os, time

def numbers(n: int = 10):
    yield from range(n)

def where(item, seconds: float = 0.0):
    time.sleep(seconds)
    return {"item": item, "pid": os.getpid()}

def record(item, path: str):
    with open(path, "a") as f:
        f.write(json.dumps(item) + "\\n")
'''

REMOTE = """
python_path = ["../code"]
max_retries = 1
retry_backoff = "50ms"
[[stage]]
name = "src"
kind = "producer"
call = "addrcode:numbers"
auto_start = false
[[stage]]
name = "work"
call = "addrcode:where"
executor = "ray"
replicas = 2
args = {{ seconds = {seconds} }}
[[stage]]
name = "sink"
kind = "consumer"
call = "addrcode:record"
args = {{ path = "{out}" }}
"""

LOCAL = """
python_path = ["../code"]
[[stage]]
name = "src"
kind = "producer"
call = "addrcode:numbers"
auto_start = false
[[stage]]
name = "work"
call = "addrcode:where"{executor}
[[stage]]
name = "sink"
kind = "consumer"
call = "addrcode:record"
args = {{ path = "{out}" }}
"""


def make_daemon(base: Path, address: str, env: dict[str, str] | None = None) -> DaemonProcess:
    daemon = DaemonProcess(base, settings=f'[ray]\naddress = "{address}"\n', env=env)
    (base / "code").mkdir()
    (base / "code" / "addrcode.py").write_text(CODE)
    (base / "out").mkdir()
    return daemon


def trigger(daemon: DaemonProcess, pipeline: str, n: int, wait: bool, timeout: float = 120) -> dict[str, Any]:
    params = {"wait": "true", "timeout": str(timeout)} if wait else {}
    r = daemon.client.post(f"/pipelines/{pipeline}/stages/src/trigger", params=params, json={"args": {"n": n}},
                           timeout=timeout + 10)
    assert r.status_code in (200, 202), r.text
    return dict(r.json())


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    ray_head = RayHead()
    try:
        ray_head.start()
        yield ray_head
    finally:
        ray_head.close()


def test_a_pipeline_runs_on_the_head_and_survives_losing_it(head: RayHead, tmp_path: Path) -> None:
    # Ray ends a driver whose GCS stays unreachable for gcs_rpc_server_reconnect_timeout_s
    # (60 s by default); a shorter one keeps this test short, the behaviour is the same
    env = {**head.client_env, "RAY_gcs_rpc_server_reconnect_timeout_s": "10"}
    daemon = make_daemon(tmp_path, head.address, env)
    out = tmp_path / "out"
    daemon.write_pipeline("remote", REMOTE.format(seconds=0.05, out=out / "remote.txt"))
    daemon.write_pipeline("local", LOCAL.format(executor="", out=out / "local.txt"))
    daemon.start(timeout=240)
    try:
        assert {p["name"]: p["state"] for p in daemon.client.get("/pipelines").json()} == {
            "remote": "running", "local": "running"}, daemon.logs()[-3000:]
        assert not (daemon.state_dir / "ray" / "tmp").exists()  # no embedded instance was started

        # the actors are processes of the head node
        whole = trigger(daemon, "remote", 20, wait=True)
        assert whole["state"] == "completed" and whole["items"]["finished"] == 20, whole
        stats = daemon.client.get("/pipelines/remote/stats").json()["stages"]["work"]
        assert stats["replicas"] == {"alive": 2, "wanted": 2}
        pids = {row["pid"] for row in lines(out / "remote.txt")}
        assert sorted(row["item"] for row in lines(out / "remote.txt")) == list(range(20))
        assert pids and pids <= set(head.processes()), (pids, head.processes())

        # the head goes away mid-run: nothing is lost, the run ends, the daemon stays
        (out / "remote.txt").unlink()
        run = trigger(daemon, "remote", 400, wait=False)["run"]
        daemon.wait_for(lambda: len(lines(out / "remote.txt")) >= 10, 120, what="items through the head")
        head.kill()
        done = daemon.wait_for(lambda: _finished(daemon, "remote", run), 240, what="the run to end")
        items = done["items"]
        assert done["state"] == "failed" and items["in_flight"] == 0, done
        assert items["produced"] == 400
        assert items["finished"] + items["dead_lettered"] == items["produced"], items
        assert items["dead_lettered"] > 0
        assert len(lines(out / "remote.txt")) == items["finished"]  # each finished item consumed once
        letters = daemon.client.get("/pipelines/remote/dead-letters", params={"limit": 1000}).json()
        assert len([d for d in letters if d["run"] == run]) == items["dead_lettered"]
        assert all(head.address in d["error"] or "RayDriverLost" in d["error"] for d in letters), letters[-1]
        logs = daemon.logs()
        assert f"ray: lost the Ray cluster at '{head.address}'" in logs, logs[-4000:]

        assert daemon.client.get("/health").status_code == 200
        assert daemon.pipeline("remote")["state"] == "running"  # its next runs fail until the cluster is back
        local = trigger(daemon, "local", 50, wait=True)
        assert local["state"] == "completed" and local["items"]["finished"] == 50
        assert len(lines(out / "local.txt")) == 50
    finally:
        daemon.close()


def _finished(daemon: DaemonProcess, pipeline: str, run: str) -> dict[str, Any] | None:
    info = daemon.client.get(f"/pipelines/{pipeline}/runs/{run}").json()
    return dict(info) if info["state"] != "running" else None


def test_an_unreachable_cluster_fails_only_the_pipelines_that_need_it(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    daemon = make_daemon(tmp_path, nowhere)
    out = tmp_path / "out"
    daemon.write_pipeline("remote", REMOTE.format(seconds=0, out=out / "remote.txt"))
    daemon.write_pipeline("local", LOCAL.format(executor="", out=out / "local.txt"))
    daemon.start(timeout=120)
    try:
        remote = daemon.pipeline("remote")
        assert remote["state"] == "failed", remote
        assert (f"remote/work: executor = \"ray\": the Ray cluster at '{nowhere}' cannot be reached: "
                f"nothing listens at {nowhere} (connection refused)") in remote["error"], remote["error"]
        assert daemon.pipeline("local")["state"] == "running"
        assert trigger(daemon, "local", 5, wait=True)["state"] == "completed"

        # a reload that moves a running pipeline's stage onto the cluster: the old version stays
        old = daemon.pipeline("local")["version"]
        daemon.write_pipeline("local", LOCAL.format(executor='\nexecutor = "ray"', out=out / "local.txt"))
        r = daemon.client.post("/reload", timeout=120)
        assert r.status_code in (200, 202, 409, 422), r.text
        local = daemon.wait_for(lambda: (p := daemon.pipeline("local")).get("error") and p, 60, what="the error")
        assert local["state"] == "running" and local["version"] == old, local
        assert "cannot be reached: nothing listens at" in local["error"], local["error"]
        assert trigger(daemon, "local", 5, wait=True)["state"] == "completed"
        assert len(lines(out / "local.txt")) == 10
        assert daemon.client.get("/health").status_code == 200
        assert not (daemon.state_dir / "ray" / "driver.log").exists()  # refused before any ray.init
    finally:
        daemon.close()
