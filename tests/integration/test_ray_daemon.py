"""`executor = "ray"` through a real daemon and its embedded Ray (one daemon, one Ray, per module).

Function and class stages item for item, ctx.emit_to, a run's accumulator after a Ray stage,
retries and dead letters, stats and /metrics, a hot reload that changes the code, drain with
batches in flight, and SIGTERM (the daemon stops its embedded Ray: no process of it is left).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import DaemonProcess

pytestmark = pytest.mark.timeout(400)

CODE = '''
import json, os, time

def numbers(n: int = 10, out: str = ""):
    for i in range(n):
        if out:
            with open(out, "a") as f:
                f.write(f"{i}\\n")
        yield i

def double(item):
    return item * 2

def slow(item, seconds: float = 0.0):
    time.sleep(seconds)
    return item

class Scorer:
    def __init__(self, factor: int = 1):
        self.factor = factor
        self.pid = None
    def setup(self):
        self.pid = os.getpid()
    def __call__(self, item, ctx):
        if item % 10 == 0:
            ctx.emit_to("audit", {"audited": item})
        return {"score": item * self.factor, "pid": self.pid}

def flaky(item, marker_dir: str):
    if item == 3:
        raise ValueError(f"bad {item}")
    marker = os.path.join(marker_dir, f"seen-{item}")
    if item == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return item

def record(item, path: str):
    with open(path, "a") as f:
        f.write(json.dumps(item) + "\\n")
'''

VERSIONED = "def answer(item):\n    return {'version': %r, 'item': item}\n"


def pipelines(base: Path) -> dict[str, str]:
    out = base / "out"
    return {
        "rayflow": f"""
python_path = ["../code"]
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
[[stage]]
name = "double"
call = "raycode:double"
executor = "ray"
replicas = 2
[[stage]]
name = "score"
call = "raycode:Scorer"
executor = "ray"
args = {{ factor = 3 }}
ray_options = {{ num_cpus = 0.5, max_in_flight = 1 }}
[[stage]]
name = "sink"
kind = "consumer"
call = "raycode:record"
args = {{ path = "{out}/sink.jsonl" }}
[[stage]]
name = "audit"
kind = "consumer"
call = "raycode:record"
args = {{ path = "{out}/audit.jsonl" }}
""",
        "rayacc": f"""
python_path = ["../code"]
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
[[stage]]
name = "double"
call = "raycode:double"
executor = "ray"
[[stage]]
name = "batch"
kind = "accumulator"
max_size = 100000
[[stage]]
name = "sink"
kind = "consumer"
call = "raycode:record"
args = {{ path = "{out}/batches.jsonl" }}
""",
        "rayfail": f"""
python_path = ["../code"]
max_retries = 2
retry_backoff = "10ms"
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
[[stage]]
name = "flaky"
kind = "consumer"
call = "raycode:flaky"
executor = "ray"
args = {{ marker_dir = "{out}" }}
""",
        "rayslow": f"""
python_path = ["../code"]
drain_timeout = "60s"
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
args = {{ out = "{out}/slow-produced.txt" }}
[[stage]]
name = "work"
call = "raycode:slow"
executor = "ray"
replicas = 2
args = {{ seconds = 0.05 }}
[[stage]]
name = "sink"
kind = "consumer"
call = "raycode:record"
args = {{ path = "{out}/slow.jsonl" }}
""",
        "rayreload": f"""
python_path = ["../versioned"]
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
[[stage]]
name = "work"
call = "versioned:answer"
executor = "ray"
[[stage]]
name = "sink"
kind = "consumer"
call = "raycode:record"
args = {{ path = "{out}/versioned.jsonl" }}
""".replace('python_path = ["../versioned"]', 'python_path = ["../versioned", "../code"]'),
    }


@pytest.fixture(scope="module")
def ray_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("raydaemon")
    daemon = DaemonProcess(base, settings='[ray]\nobject_store_memory = "80MiB"\n')
    (base / "code").mkdir()
    (base / "code" / "raycode.py").write_text(CODE)
    (base / "versioned").mkdir()
    (base / "versioned" / "versioned.py").write_text(VERSIONED % "v1")
    (base / "out").mkdir()
    for name, text in pipelines(base).items():
        daemon.write_pipeline(name, text)
    daemon.start(timeout=240)
    try:
        yield daemon
    finally:
        daemon.close()


def run(daemon: DaemonProcess, pipeline: str, n: int, timeout: float = 120) -> dict[str, Any]:
    r = daemon.client.post(f"/pipelines/{pipeline}/stages/src/trigger", params={"wait": "true", "timeout": str(timeout)},
                           json={"args": {"n": n}}, timeout=timeout + 10)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["state"] != "running", result
    return dict(result)


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_pipeline_runs(ray_daemon: DaemonProcess) -> None:
    states = {p["name"]: p["state"] for p in ray_daemon.client.get("/pipelines").json()}
    assert states == dict.fromkeys(pipelines(ray_daemon.base_dir), "running"), ray_daemon.logs()[-3000:]


def test_function_and_class_stages_item_for_item_with_emit_to(ray_daemon: DaemonProcess) -> None:
    result = run(ray_daemon, "rayflow", 200)
    assert result["state"] == "completed"
    assert result["items"]["finished"] == 200 + 40  # every item, and the 40 emit_to copies (i * 2 % 10 == 0)
    out = ray_daemon.base_dir / "out"
    sink = lines(out / "sink.jsonl")
    assert sorted(row["score"] for row in sink) == [i * 2 * 3 for i in range(200)]
    assert len({row["pid"] for row in sink}) == 1  # one Scorer actor, set up once
    assert sorted(row["audited"] for row in lines(out / "audit.jsonl")) == [i * 2 for i in range(200) if i * 2 % 10 == 0]
    stats = ray_daemon.client.get("/pipelines/rayflow/stats").json()["stages"]
    assert stats["double"]["executor"] == "ray"
    assert stats["double"]["replicas"] == {"alive": 2, "wanted": 2}
    assert stats["double"]["in_flight_batches"] == 0 and stats["double"]["items_out"] == 200
    assert stats["score"]["replicas"] == {"alive": 1, "wanted": 1}
    assert "executor" not in stats["sink"]
    metrics = ray_daemon.client.get("/metrics").text
    assert 'pipelined_stage_replicas{pipeline="rayflow",stage="double",state="alive"} 2.0' in metrics
    assert 'pipelined_stage_in_flight_batches{pipeline="rayflow",stage="double"} 0.0' in metrics
    rows = {row["name"]: row for row in ray_daemon.pipeline("rayflow")["stages"]}
    assert rows["double"]["threads"] == 0 and rows["double"]["processes"] == 0  # no local budget


def test_accumulator_after_a_ray_stage_gets_the_whole_run(ray_daemon: DaemonProcess) -> None:
    result = run(ray_daemon, "rayacc", 500)
    assert result["state"] == "completed"
    batches = lines(ray_daemon.base_dir / "out" / "batches.jsonl")
    assert len(batches) == 1 and sorted(batches[0]) == [i * 2 for i in range(500)]


def test_retries_then_dead_letters(ray_daemon: DaemonProcess) -> None:
    result = run(ray_daemon, "rayfail", 8)
    assert result["state"] == "failed"
    assert result["items"]["finished"] == 7 and result["items"]["dead_lettered"] == 1
    letters = ray_daemon.client.get("/pipelines/rayfail/dead-letters").json()
    assert [(d["item"], d["attempts"], d["error"]) for d in letters if d["run"] == result["run"]] == [
        (3, 3, "ValueError: bad 3")
    ]
    stats = ray_daemon.client.get("/pipelines/rayfail/stats").json()["stages"]["flaky"]
    assert stats["items_retried"] >= 3  # item 3 twice, item 5 once (with its batch-mates, if any)


def test_hot_reload_runs_the_new_code(ray_daemon: DaemonProcess) -> None:
    out = ray_daemon.base_dir / "out" / "versioned.jsonl"
    run(ray_daemon, "rayreload", 3)
    assert {row["version"] for row in lines(out)} == {"v1"}
    (ray_daemon.base_dir / "versioned" / "versioned.py").write_text(VERSIONED % "v2")
    text = (ray_daemon.conf_dir / "rayreload.toml").read_text()
    ray_daemon.write_pipeline("rayreload", 'description = "v2"\n' + text)
    r = ray_daemon.client.post("/reload", timeout=240)
    assert r.status_code in (200, 202), r.text
    ray_daemon.wait_for(lambda: ray_daemon.pipeline("rayreload")["state"] == "running"
                        and ray_daemon.pipeline("rayreload").get("description") == "v2", 240, what="v2 running")
    out.unlink()
    run(ray_daemon, "rayreload", 3)
    assert sorted((row["version"], row["item"]) for row in lines(out)) == [("v2", 0), ("v2", 1), ("v2", 2)]


def test_drain_with_batches_in_flight_loses_nothing(ray_daemon: DaemonProcess) -> None:
    r = ray_daemon.client.post("/pipelines/rayslow/stages/src/trigger", json={"args": {"n": 60}})
    run_id = r.json()["run"]
    ray_daemon.wait_for(lambda: ray_daemon.client.get("/pipelines/rayslow/stats").json()["stages"]["work"]
                        ["in_flight_batches"] > 0, 60, what="batches in flight")
    r = ray_daemon.client.post("/pipelines/rayslow/drain", params={"wait": "true", "timeout": "120"}, timeout=130)
    assert r.status_code == 200, r.text
    done = ray_daemon.client.get(f"/pipelines/rayslow/runs/{run_id}").json()
    items = done["items"]
    assert items["in_flight"] == 0 and items["finished"] + items["dead_lettered"] == items["produced"] > 0
    assert len(lines(ray_daemon.base_dir / "out" / "slow.jsonl")) == items["finished"]
    assert ray_daemon.client.post("/pipelines/rayslow/start", timeout=240).status_code == 200


def test_sigterm_drains_then_stops_the_embedded_ray(ray_daemon: DaemonProcess) -> None:
    """Last in the module: the daemon stops here."""
    out = ray_daemon.base_dir / "out"
    (out / "slow.jsonl").unlink(missing_ok=True)
    (out / "slow-produced.txt").unlink(missing_ok=True)
    ray_daemon.client.post("/pipelines/rayslow/stages/src/trigger", json={"args": {"n": 40}})
    ray_daemon.wait_for(lambda: ray_daemon.client.get("/pipelines/rayslow/stats").json()["stages"]["work"]
                        ["in_flight_batches"] > 0, 60, what="batches in flight")
    assert ray_daemon.stop(timeout=120, sig=signal.SIGTERM) == 0
    produced = (out / "slow-produced.txt").read_text().split()
    consumed = lines(out / "slow.jsonl")
    assert sorted(consumed) == sorted(int(i) for i in produced)  # drained: every produced item consumed
    ray_dir = ray_daemon.state_dir / "ray"
    assert (ray_dir / "auth_token").stat().st_mode & 0o777 == 0o600
    mark = f"\0PIPELINED_RAY_DIR={ray_dir.resolve()}\0".encode()
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in b"\0" + (entry / "environ").read_bytes():
                    left.append(int(entry.name))
            except OSError:
                pass
    assert left == []
