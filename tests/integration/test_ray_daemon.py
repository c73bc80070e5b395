"""`executor = "ray"` through a real daemon and its embedded Ray (one daemon, one Ray, per module).

Function and class stages item for item, ctx.emit_to, a run's accumulator after a Ray stage,
retries and dead letters, stats and /metrics, an actor killed (ray.kill) mid-batch, the embedded
Ray's ports on loopback only, a hot reload that changes the code, drain with batches in flight,
and SIGTERM (the daemon stops its embedded Ray: no process of it is left).
"""

from __future__ import annotations

import ipaddress
import json
import os
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

def killer(item, marker_dir: str):
    """ray.kill of its own actor in the middle of the batch holding item 7 (once)."""
    marker = os.path.join(marker_dir, "killed-pid")
    if item == 7 and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        import ray
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        time.sleep(120)  # the actor dies here, its batch unfinished
    return {"item": item, "pid": os.getpid()}

def record(item, path: str):
    with open(path, "a") as f:
        f.write(json.dumps(item) + "\\n")

def span(item, path: str):
    began = time.time()
    time.sleep(0.01)
    with open(path, "a") as f:
        f.write(json.dumps([began, time.time()]) + "\\n")
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
        "rayrate": f"""
python_path = ["../code"]
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
[[stage]]
name = "work"
kind = "consumer"
call = "raycode:span"
executor = "ray"
replicas = 2
rate_limit = "10/s"
concurrency = 1
args = {{ path = "{out}/rate.jsonl" }}
""",
        "raykill": f"""
python_path = ["../code"]
max_retries = 5
retry_backoff = "100ms"
[[stage]]
name = "src"
kind = "producer"
call = "raycode:numbers"
auto_start = false
[[stage]]
name = "killer"
call = "raycode:killer"
executor = "ray"
args = {{ marker_dir = "{out}" }}
[[stage]]
name = "sink"
kind = "consumer"
call = "raycode:record"
args = {{ path = "{out}/killed.jsonl" }}
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


def marked_processes(ray_dir: Path) -> list[int]:
    """The processes of the daemon's embedded Ray (they carry its mark in their environment)."""
    mark = f"\0PIPELINED_RAY_DIR={ray_dir.resolve()}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in b"\0" + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def listening_sockets(pids: list[int]) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, int]]:
    """(address, port, pid) of every listening TCP socket and bound UDP socket of `pids`."""
    found = []
    for pid in pids:
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                      if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
        except OSError:
            continue
        for table, listening in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
            try:
                rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                if fields[3] == listening and fields[9] in inodes:
                    host, port = fields[1].split(":")
                    found.append((_address(host), int(port, 16), pid))
    return found


def _address(hexed: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexed)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
    return ipaddress.IPv4Address(words) if len(raw) == 4 else ipaddress.IPv6Address(words)


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


def test_actor_killed_mid_batch_retries_on_a_new_actor_and_the_run_completes(ray_daemon: DaemonProcess) -> None:
    out = ray_daemon.base_dir / "out"
    result = run(ray_daemon, "raykill", 30, timeout=240)
    killed = int((out / "killed-pid").read_text())
    assert result["state"] == "completed", result
    assert result["items"]["finished"] == 30 and result["items"]["dead_lettered"] == 0, result
    rows = lines(out / "killed.jsonl")
    assert sorted(row["item"] for row in rows) == list(range(30))  # each exactly once
    by_item = {row["item"]: row["pid"] for row in rows}
    assert by_item[7] != killed  # retried on the replacement actor
    stats = ray_daemon.client.get("/pipelines/raykill/stats").json()["stages"]["killer"]
    assert stats["items_retried"] >= 1 and stats["items_dead_lettered"] == 0
    assert stats["replicas"] == {"alive": 1, "wanted": 1}
    assert "stage killer: RayActorDied: ray actor died" in ray_daemon.logs()
    assert "replacement ray actor ready" in ray_daemon.logs()


def test_the_embedded_ray_listens_on_loopback_only(ray_daemon: DaemonProcess) -> None:
    ray_dir = ray_daemon.state_dir / "ray"
    pids = marked_processes(ray_dir)
    assert pids, "no process of the embedded Ray found"
    sockets = listening_sockets(pids)
    assert len(sockets) >= 3, sockets  # at least the GCS, the raylet and the driver's core worker
    assert [s for s in sockets if not s[0].is_loopback and not (
        isinstance(s[0], ipaddress.IPv6Address) and s[0].ipv4_mapped and s[0].ipv4_mapped.is_loopback)] == []


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


def test_hot_reload_with_batches_in_flight_loses_nothing(ray_daemon: DaemonProcess) -> None:
    """The old version's actors finish (or fail, retried) their batches; the rest of the run goes
    through the new version's actors: each produced item consumed once, none dead-lettered."""
    out = ray_daemon.base_dir / "out"
    (out / "slow.jsonl").unlink(missing_ok=True)
    (out / "slow-produced.txt").unlink(missing_ok=True)
    r = ray_daemon.client.post("/pipelines/rayslow/stages/src/trigger", json={"args": {"n": 80}})
    run_id = r.json()["run"]
    ray_daemon.wait_for(lambda: ray_daemon.client.get("/pipelines/rayslow/stats").json()["stages"]["work"]
                        ["in_flight_batches"] > 0, 60, what="batches in flight")
    old = ray_daemon.pipeline("rayslow")["version"]
    text = (ray_daemon.conf_dir / "rayslow.toml").read_text()
    ray_daemon.write_pipeline("rayslow", 'description = "reloaded"\n' + text)
    r = ray_daemon.client.post("/reload", timeout=240)
    assert r.status_code in (200, 202), r.text
    ray_daemon.wait_for(lambda: ray_daemon.pipeline("rayslow")["version"] != old, 240, what="the new version")
    done = ray_daemon.wait_for(lambda: (info := ray_daemon.client.get(f"/pipelines/rayslow/runs/{run_id}").json())
                               ["state"] != "running" and info, 240, what="the run to end")
    items = done["items"]
    assert done["state"] == "completed" and items["in_flight"] == 0, done
    assert items["produced"] == 80 and items["finished"] == 80 and items["dead_lettered"] == 0, items
    produced = sorted(int(i) for i in (out / "slow-produced.txt").read_text().split())
    assert sorted(lines(out / "slow.jsonl")) == produced == list(range(80))
    stats = ray_daemon.client.get("/pipelines/rayslow/stats").json()["stages"]["work"]
    assert stats["replicas"] == {"alive": 2, "wanted": 2}, stats
    (out / "slow.jsonl").unlink()  # the next tests count their own
    (out / "slow-produced.txt").unlink()


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


def test_rate_limit_and_concurrency_hold_across_replicas(ray_daemon: DaemonProcess) -> None:
    """Two actors, rate_limit = "10/s", concurrency = 1: the daemon hands out the tokens and the
    slot before a batch leaves, so no batch holds more items than tokens and no two overlap."""
    done = run(ray_daemon, "rayrate", 40)
    assert done["state"] == "completed" and done["items"]["finished"] == 40, done
    spans = sorted(tuple(json.loads(line)) for line in (ray_daemon.base_dir / "out" / "rate.jsonl").read_text().splitlines())
    assert len(spans) == 40
    for (_, ended), (began, _) in zip(spans, spans[1:], strict=False):
        assert began >= ended, "two calls in progress at once with concurrency = 1"
    starts = [began for began, _ in spans]
    for i in range(len(starts)):  # token bucket: k calls within d seconds need k <= 10 + 10 d (+1)
        for j in range(i, len(starts)):
            assert j - i + 1 <= 10 + 10 * (starts[j] - starts[i]) + 1, (i, j, starts[i], starts[j])
    stats = ray_daemon.client.get("/pipelines/rayrate/stats").json()["stages"]["work"]
    assert stats["throttled_s"] > 0


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
    assert marked_processes(ray_dir) == []
