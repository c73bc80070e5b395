"""Black-box acceptance scenarios that combine features, driven only through the spec's surface.

One shared daemon (with the conf-dir watcher and config writes on) runs the orders-like pipeline
from config.md, a nested pipeline and pipelines PUT over the API; a second daemon is stopped with
SIGTERM in the middle of a flow through a process stage and restarted on the same state dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import DaemonProcess, file_version, wait_for

STAGES = '''
import json, os, time


def fetch_new(limit=10, tag="t", delay=0.0):
    for i in range(limit):
        if delay:
            time.sleep(delay)
        yield {"id": i, "tag": tag}


def enrich(item):
    if item["id"] % 5 == 4:
        return None
    return {**item, "enriched": True}


class Scorer:
    def __init__(self, delay=0.0):
        self.delay = delay
        self.ready = False

    def setup(self):
        self.ready = True

    def __call__(self, item):
        assert self.ready, "setup() not called before the first item"
        if self.delay:
            time.sleep(self.delay)
        return {**item, "score": item["id"] * 2, "pid": os.getpid()}


def save_batch(batch, out, ctx):
    line = json.dumps({"run": ctx.run, "ids": [x["id"] for x in batch], "n": len(batch)})
    with open(out, "a") as fh:
        fh.write(line + "\\n")


def numbers(n=5):
    return list(range(n))


def double(item):
    return item * 2


def negate(item):
    return -item


def sink(item, out):
    with open(out, "a") as fh:
        fh.write(json.dumps(item) + "\\n")


def slow(item, delay=0.2):
    time.sleep(delay)
    return item
'''


def orders_toml(out: Path, *, description: str, score_delay: float = 0.0, max_wait: str = "5s") -> str:
    return f'''
description = "{description}"
max_threads = 8
max_processes = 2
max_retries = 3

[[stage]]
name = "fetch"
kind = "producer"
call = "bbstages:fetch_new"
auto_start = false
args = {{ limit = 10 }}

[[stage]]
name = "enrich"
call = "bbstages:enrich"
threads = 4

[[stage]]
name = "score"
call = "bbstages:Scorer"
processes = 2
args = {{ delay = {score_delay} }}

[[stage]]
name = "batch"
kind = "accumulator"
max_size = 3
max_wait = "{max_wait}"

[[stage]]
name = "store"
kind = "consumer"
call = "bbstages:save_batch"
args = {{ out = "{out}" }}
'''


NESTED = '''
description = "nested parallel block"

[[stage]]
name = "src"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "par"
kind = "pipeline"
mode = "parallel"

  [[stage.stage]]
  name = "dbl"
  call = "bbstages:double"

  [[stage.stage]]
  name = "neg"
  call = "bbstages:negate"

[[stage]]
name = "out"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
'''


def saved(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def saved_ids(out: Path, run: str) -> list[int]:
    return sorted(i for rec in saved(out) if rec["run"] == run for i in rec["ids"])


def expected_ids(produced: int) -> list[int]:
    return [i for i in range(produced) if i % 5 != 4]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("blackbox")
    d = DaemonProcess(base, watch=True, settings="[api]\nconfig_write = true\n", token="blackbox-token",
                      env={"BB_ONERROR": str(base / "onerror.jsonl")})
    d.write_module("bbstages", STAGES)
    d.write_pipeline("orders", orders_toml(base / "orders.out", description="v1"))
    d.write_pipeline("nested", NESTED.format(out=base / "nested.out"))
    try:
        d.start()
        yield d
    finally:
        d.close()


def run_of(d: DaemonProcess, name: str, run: str) -> dict[str, Any]:
    r = d.client.get(f"/pipelines/{name}/runs/{run}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_run_done(d: DaemonProcess, name: str, run: str, timeout: float = 20.0) -> dict[str, Any]:
    return d.wait_for(
        lambda: (body := run_of(d, name, run))["state"] != "running" and body,
        timeout,
        what=f"run {run} of {name} finished",
    )


def stats(d: DaemonProcess, name: str) -> dict[str, Any]:
    r = d.client.get(f"/pipelines/{name}/stats")
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- the orders pipeline of config.md ------------------------------------------------------------


def test_orders_concurrent_triggers_with_wait_count_exactly(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "orders.out"
    detail = d.pipeline("orders")
    assert detail["state"] == "running" and detail["description"] == "v1"
    assert d.client.get("/pipelines/orders/runs").json() == []  # auto_start = false: no run yet
    by_name = {s["name"]: s for s in detail["stages"]}
    assert by_name["enrich"]["threads"] == 4 and by_name["score"]["processes"] == 2
    assert by_name["fetch"]["auto_start"] is False
    before = stats(d, "orders")

    results: dict[str, httpx.Response] = {}

    def fire(tag: str) -> None:
        with httpx.Client(base_url=d.url, timeout=60, headers=d.auth_headers) as c:
            results[tag] = c.post(
                "/pipelines/orders/stages/fetch/trigger?wait=true&timeout=30",
                json={"args": {"limit": 10, "tag": tag}},
            )

    threads = [threading.Thread(target=fire, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["r0", "r1", "r2", "r3"]
    runs = set()
    for tag, r in results.items():
        assert r.status_code == 200, (tag, r.status_code, r.text)
        body = r.json()
        assert body["pipeline"] == "orders" and body["stage"] == "fetch"
        assert body["state"] == "completed", body
        assert body["items"] == {"produced": 10, "in_flight": 0, "finished": 3, "filtered": 2, "dead_lettered": 0}
        assert body["finished_at"] is not None and body["error"] is None
        runs.add(body["run"])
        # batches never mix runs: 8 surviving items of this run in batches of 3, 3, 2
        assert saved_ids(out, body["run"]) == expected_ids(10)
        assert sorted(rec["n"] for rec in saved(out) if rec["run"] == body["run"]) == [2, 3, 3]
    assert len(runs) == 4
    listed = [r["run"] for r in d.client.get("/pipelines/orders/runs").json()]
    assert set(listed) == runs

    after = stats(d, "orders")
    for key in ("started", "completed"):
        assert after["runs"][key] - before["runs"][key] == 4, (before["runs"], after["runs"])
    assert after["runs"]["active"] == 0 and after["runs"]["failed"] == before["runs"]["failed"]
    delta = {s: {k: after["stages"][s][k] - before["stages"][s][k] for k in ("items_in", "items_out")}
             for s in ("fetch", "enrich", "score", "batch", "store")}
    assert delta["fetch"] == {"items_in": 0, "items_out": 40}
    assert delta["enrich"] == {"items_in": 40, "items_out": 32}
    assert delta["score"] == {"items_in": 32, "items_out": 32}  # counted in worker processes too
    assert delta["batch"] == {"items_in": 32, "items_out": 12}
    assert delta["store"]["items_in"] == 12
    assert after["stages"]["score"]["processes"] == 2 and after["stages"]["enrich"]["threads"] == 4


def test_orders_hot_reload_by_file_edit_while_a_run_is_active(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "orders.out"
    # v2: a slow scorer, so a backlog builds up behind it
    v2 = d.write_pipeline("orders", orders_toml(out, description="v2", score_delay=0.02))
    d.wait_version("orders", file_version(v2), timeout=15)
    counters_before = stats(d, "orders")["stages"]["enrich"]["items_in"]

    r = d.client.post("/pipelines/orders/stages/fetch/trigger", json={"args": {"limit": 2000, "delay": 0.004, "tag": "long"}})
    assert r.status_code == 202, r.text
    long_run = r.json()["run"]
    d.wait_for(lambda: saved_ids(out, long_run), 15, what="the long run reached the consumer")
    assert run_of(d, "orders", long_run)["state"] == "running"

    # v3 by file edit (the watcher), while the long run is producing and a backlog is queued
    v3 = d.write_pipeline("orders", orders_toml(out, description="v3"))
    d.wait_for(lambda: d.pipeline("orders")["state"] == "draining", 10, interval=0.005,
               what="the old version draining")
    # a trigger sent during the swap waits for the new version and is answered by it
    r = d.client.post("/pipelines/orders/stages/fetch/trigger?wait=true&timeout=30", json={"args": {"tag": "swap"}})
    assert r.status_code == 200, r.text
    swap = r.json()
    assert swap["state"] == "completed", swap
    assert swap["items"] == {"produced": 10, "in_flight": 0, "finished": 3, "filtered": 2, "dead_lettered": 0}
    assert saved_ids(out, swap["run"]) == expected_ids(10)
    detail = d.wait_version("orders", file_version(v3))
    assert detail["description"] == "v3" and detail["last_reload"]["ok"] is True

    # the long run was ended by the reload: cancelled, nothing in flight, nothing lost
    old = wait_run_done(d, "orders", long_run)
    assert old["state"] == "cancelled", old
    items = old["items"]
    assert 0 < items["produced"] < 2000 and items["in_flight"] == 0 and items["dead_lettered"] == 0, old
    assert items["filtered"] == len([i for i in range(items["produced"]) if i % 5 == 4])
    assert saved_ids(out, long_run) == expected_ids(items["produced"])
    # counters survive the reload
    assert stats(d, "orders")["stages"]["enrich"]["items_in"] >= counters_before + items["produced"] + 10
    dl = d.client.get("/pipelines/orders/dead-letters").json()
    assert [x for x in dl if x["run"] in (long_run, swap["run"])] == []


def test_drain_wait_returns_stats_then_start_and_trigger(shared: DaemonProcess) -> None:
    d = shared
    r = d.client.post("/pipelines/orders/drain?wait=true&timeout=20")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pipeline"] == "orders" and body["state"] == "drained"
    assert {"runs", "stages", "version", "uptime_s"} <= set(body)
    assert body["runs"]["active"] == 0
    r = d.client.post("/pipelines/orders/stages/fetch/trigger", json={})
    assert r.status_code == 409 and r.json()["status_code"] == 409
    assert d.client.post("/pipelines/orders/drain").status_code == 409
    r = d.client.post("/pipelines/orders/start")
    assert r.status_code == 200 and r.json() == {"state": "running"}
    assert d.client.post("/pipelines/orders/start").status_code == 409
    r = d.client.post("/pipelines/orders/stages/fetch/trigger?wait=true", json={"args": {"limit": 5}})
    assert r.status_code == 200 and r.json()["state"] == "completed"
    assert r.json()["items"]["produced"] == 5


# -- nested pipeline: graph formats and a broadcast flow ------------------------------------------


def test_nested_pipeline_graph_formats_and_broadcast_flow(shared: DaemonProcess) -> None:
    d = shared
    listed = {p["name"]: p for p in d.client.get("/pipelines").json()}
    assert listed["nested"]["stages"] == 5 and listed["nested"]["state"] == "running"

    g = d.client.get("/pipelines/nested/graph")
    assert g.status_code == 200
    graph = g.json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert set(nodes) == {"src", "par", "out"}
    assert nodes["par"]["kind"] == "pipeline" and nodes["src"]["auto_start"] is False
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {("src", "par"), ("par", "out")}
    children = nodes["par"]["children"]
    assert {n["id"] for n in children["nodes"]} == {"dbl", "neg"}
    child_edges = {(e["from"], e["to"]): e["route"] for e in children["edges"]}
    assert set(child_edges) == {("par", "dbl"), ("par", "neg"), ("dbl", "par"), ("neg", "par")}
    assert child_edges[("par", "dbl")] == "broadcast" == child_edges[("par", "neg")]

    m = d.client.get("/pipelines/nested/graph?format=mermaid")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert m.text.lstrip().startswith("flowchart LR")
    for name in ("src", "par", "dbl", "neg", "out"):
        assert name in m.text
    dot = d.client.get("/pipelines/nested/graph?format=dot")
    assert dot.status_code == 200 and dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.lstrip().startswith("digraph")

    offline = subprocess.run(
        [sys.executable, "-m", "pipelined", "graph", str(d.conf_dir / "nested.toml"), "--format", "json"],
        capture_output=True, text=True, timeout=30, env=d.environment(),
    )
    assert offline.returncode == 0, offline.stderr
    off = json.loads(offline.stdout)
    assert {(e["from"], e["to"]) for e in off["edges"]} == {("src", "par"), ("par", "out")}

    r = d.client.post("/pipelines/nested/stages/src/trigger?wait=true", json={"args": {"n": 4}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "completed"
    assert run["items"] == {"produced": 4, "in_flight": 0, "finished": 8, "filtered": 0, "dead_lettered": 0}
    got = sorted(json.loads(x) for x in (d.base_dir / "nested.out").read_text().split())
    assert got == sorted([0, 2, 4, 6, 0, -1, -2, -3])
    st = stats(d, "nested")
    assert {"src", "par", "dbl", "neg", "out"} <= set(st["stages"])
    assert st["stages"]["dbl"]["items_in"] == 4 and st["stages"]["neg"]["items_in"] == 4
    assert st["stages"]["out"]["items_in"] == 8


# -- config writes, reload, metrics -------------------------------------------------------------


def test_put_json_pipeline_then_trigger(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "putjson.out"
    doc = {
        "description": "written as JSON",
        "stage": [
            {"name": "gen", "kind": "producer", "call": "bbstages:numbers", "auto_start": False},
            {"name": "x2", "call": "bbstages:double", "threads": 2},
            {"name": "keep", "kind": "consumer", "call": "bbstages:sink", "args": {"out": str(out)}},
        ],
    }
    r = d.client.put("/pipelines/putjson", json=doc)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "putjson" and r.json()["description"] == "written as JSON"
    path = d.conf_dir / "putjson.toml"
    assert path.exists()
    d.wait_version("putjson", file_version(path))
    r = d.client.post("/pipelines/putjson/stages/gen/trigger?wait=true", json={"args": {"n": 3}})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "completed" and r.json()["items"]["finished"] == 3
    assert sorted(json.loads(x) for x in out.read_text().split()) == [0, 2, 4]

    bad = dict(doc, stage=[dict(doc["stage"][0], thread=2)])
    r = d.client.put("/pipelines/putjson", json=bad)
    assert r.status_code == 400 and "threads" in r.json()["detail"]
    assert d.pipeline("putjson")["version"] == file_version(path)

    doc["description"] = "updated"
    r = d.client.put("/pipelines/putjson", json=doc)
    assert r.status_code == 200, r.text
    assert d.pipeline("putjson")["description"] == "updated"
    r = d.client.post("/pipelines/putjson/stages/x2/trigger?wait=true", json={"items": [10]})
    assert r.status_code == 200 and r.json()["items"]["finished"] == 1


def test_post_reload_result_shape_and_invalid_file_name(shared: DaemonProcess) -> None:
    d = shared
    (d.conf_dir / "Bad Name.toml").write_text(NESTED.format(out=d.base_dir / "never.out"))
    (d.conf_dir / "_ignored.toml").write_text("not toml at all [[[")
    (d.conf_dir / "notes.txt").write_text("ignored")
    r = d.client.post("/reload")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"added", "updated", "removed", "unchanged", "failed"}
    assert isinstance(body["failed"], dict) and "Bad Name.toml" in body["failed"]
    assert "_ignored" not in json.dumps(body) and "notes" not in json.dumps(body)
    assert {"orders", "nested"} <= set(body["unchanged"]) | set(body["updated"])
    names = {p["name"] for p in d.client.get("/pipelines").json()}
    assert names == {"orders", "nested", "putjson"}
    (d.conf_dir / "Bad Name.toml").unlink()


def test_metrics_names_and_labels(shared: DaemonProcess) -> None:
    d = shared
    r = d.client.get("/metrics")
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    # prometheus-client strips the _total suffix from counter family names
    items = families.get("pipelined_stage_items") or families["pipelined_stage_items_total"]
    labelled = {(s.labels.get("pipeline"), s.labels.get("stage"), s.labels.get("outcome")) for s in items.samples}
    assert any(p == "orders" and st == "score" for p, st, _ in labelled)
    assert all(o for _, _, o in labelled)
    depth = families["pipelined_stage_queue_depth"]
    assert {"pipeline", "stage"} <= set(depth.samples[0].labels)
    st = stats(d, "orders")["stages"]
    by_key = {(s.labels["stage"], s.labels["outcome"]): s.value for s in items.samples
              if s.labels.get("pipeline") == "orders" and not s.name.endswith("_created")}
    assert by_key[("score", "in")] == st["score"]["items_in"] > 0  # counted in worker processes
    assert by_key[("enrich", "out")] == st["enrich"]["items_out"]
    reloads = families.get("pipelined_reloads") or families["pipelined_reloads_total"]
    assert any(s.labels.get("pipeline") == "orders" and s.labels.get("result") for s in reloads.samples)


# -- SIGTERM during a flow with a process stage; dead letters survive a restart --------------------

def slow_process_pipeline(out: object, *, delay: float, drain_timeout: str, desc: str = "") -> str:
    """gen → work (processes = 2, sleeps `delay` per item) → keep: a flow a drain deadline cuts."""
    return f"""
description = "{desc}"
drain_timeout = "{drain_timeout}"
max_retries = 0

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "work"
call = "bbstages:slow"
processes = 2
args = {{ delay = {delay} }}

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
"""


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_mid_flow_with_process_stage_then_dead_letters_survive_restart(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path)
    out = tmp_path / "slow.out"
    d.write_module("bbstages", STAGES)
    d.write_pipeline("slow", slow_process_pipeline(out, delay=0.15, drain_timeout="1s"))
    d2: DaemonProcess | None = None
    try:
        d.start()
        r = d.client.post("/pipelines/slow/stages/gen/trigger", json={"args": {"n": 60}})
        assert r.status_code == 202, r.text
        run = r.json()["run"]
        d.wait_for(lambda: out.exists() and len(out.read_text().split()) >= 2, 15, what="items consumed")
        assert run_of(d, "slow", run)["items"]["produced"] == 60
        workers = descendants(d.pid)
        assert workers, "the process stage has worker processes"
        d.send_signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        wait_for(lambda: not any(alive(p) for p in workers), 10, what="no worker process left")

        done = [json.loads(x) for x in out.read_text().split()]
        assert len(set(done)) == len(done) and len(done) < 60
        d2 = DaemonProcess(tmp_path)
        d2.start()
        r = d2.client.get("/pipelines/slow/dead-letters?limit=1000")
        assert r.status_code == 200
        letters = r.json()
        assert letters, "what did not finish is dead-lettered"
        assert {x["error"] for x in letters} == {"shutdown"}
        assert {x["run"] for x in letters} == {run}
        assert all(x["stage"] in ("work", "keep") for x in letters)
        lost = [x["item"] for x in letters]
        assert len(set(lost)) == len(lost)
        assert set(lost).isdisjoint(done), "a finished item was also dead-lettered"
        assert sorted(lost + done) == list(range(60))
        assert set(letters[0]) >= {"id", "run", "stage", "at", "attempts", "error", "item"}
        assert d2.stop() == 0
    finally:
        d.close()
        if d2 is not None:
            d2.close()


# -- more combinations on the shared daemon -----------------------------------------------------

MORE_STAGES = '''
import asyncio, json, os, threading, time


def flaky(item, marks):
    path = os.path.join(marks, f"att-{item}")
    with open(path, "a") as fh:
        fh.write("x")
    attempts = len(open(path).read())
    if item == 3:
        raise ValueError(f"bad {item}")
    if item == 4 and attempts == 1:
        raise RuntimeError("transient")
    return item


def on_error(item, error, stage):
    with open(os.environ.get("BB_ONERROR", "/dev/null"), "a") as fh:
        fh.write(json.dumps({"item": repr(item), "error": str(error), "stage": str(stage)}) + "\\n")


class Gen:
    def __init__(self, base=100):
        self.base = base

    def __call__(self, n=3):
        for i in range(n):
            yield self.base + i


async def aslow(item):
    await asyncio.sleep(0.01)
    return item


def split(item, ctx):
    if item % 2:
        ctx.emit_to("odd", item)
        return None
    return item


def lockish(item):
    return threading.Lock() if item == 1 else item


def trickle(n=3, delay=0.4):
    for i in range(n):
        yield i
        time.sleep(delay)


def stamp(batch, out):
    with open(out, "a") as fh:
        fh.write(json.dumps({"t": time.time(), "batch": batch}) + "\\n")
'''


def install_more(d: DaemonProcess) -> None:
    if not (d.modules_dir / "bbmore.py").exists():
        d.write_module("bbmore", MORE_STAGES)


def put_toml(d: DaemonProcess, name: str, text: str) -> dict[str, Any]:
    r = d.client.put(f"/pipelines/{name}", content=text, headers={"content-type": "application/toml"})
    assert r.status_code in (200, 201), r.text
    d.wait_state(name, "running", timeout=15)
    return dict(r.json())


def test_failures_in_a_process_stage_retry_dead_letter_and_fail_the_run(shared: DaemonProcess) -> None:
    d = shared
    install_more(d)
    marks = d.base_dir / "marks"
    marks.mkdir()
    out = d.base_dir / "flaky.out"
    put_toml(d, "flaky", f'''
max_retries = 2
retry_backoff = "10ms"

[hooks]
on_error = "bbmore:on_error"

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "proc"
call = "bbmore:flaky"
processes = 2
args = {{ marks = "{marks}" }}

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    r = d.client.post("/pipelines/flaky/stages/gen/trigger?wait=true", json={"args": {"n": 6}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "failed" and run["error"], run
    assert run["items"] == {"produced": 6, "in_flight": 0, "finished": 5, "filtered": 0, "dead_lettered": 1}
    assert sorted(json.loads(x) for x in out.read_text().split()) == [0, 1, 2, 4, 5]
    letters = d.client.get("/pipelines/flaky/dead-letters").json()
    assert len(letters) == 1
    (letter,) = letters
    assert letter["run"] == run["run"] and letter["stage"] == "proc" and letter["item"] == 3
    assert letter["attempts"] == 3 and "ValueError" in letter["error"] and "bad 3" in letter["error"]
    proc = stats(d, "flaky")["stages"]["proc"]
    assert (proc["items_in"], proc["items_failed"], proc["items_retried"], proc["items_dead_lettered"]) == (6, 4, 3, 1)
    assert proc["items_out"] == 5
    assert stats(d, "flaky")["runs"]["failed"] == 1
    hooked = [json.loads(x) for x in (d.base_dir / "onerror.jsonl").read_text().splitlines()]
    assert len(hooked) == 1 and hooked[0]["item"] == "3" and "bad 3" in hooked[0]["error"]
    assert "proc" in hooked[0]["stage"]


def test_unpicklable_item_into_a_process_stage_is_dead_lettered_by_repr(shared: DaemonProcess) -> None:
    d = shared
    install_more(d)
    out = d.base_dir / "pickle.out"
    put_toml(d, "pickly", f'''
max_retries = 0

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "mk"
call = "bbmore:lockish"

[[stage]]
name = "proc"
call = "bbstages:double"
processes = 1

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    r = d.client.post("/pipelines/pickly/stages/gen/trigger?wait=true", json={"args": {"n": 3}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "failed"
    assert run["items"]["produced"] == 3 and run["items"]["finished"] == 2 and run["items"]["dead_lettered"] == 1
    assert sorted(json.loads(x) for x in out.read_text().split()) == [0, 4]
    (letter,) = d.client.get("/pipelines/pickly/dead-letters").json()
    assert isinstance(letter["item"], str) and "lock" in letter["item"].lower()
    assert "lock" in letter["error"].lower() and ("proc" in letter["error"] or "mk" in letter["error"])


def test_class_producer_async_stage_and_emit_to(shared: DaemonProcess) -> None:
    d = shared
    install_more(d)
    out = d.base_dir / "route.out"
    put_toml(d, "route", f'''
max_threads = 6

[[stage]]
name = "gen"
kind = "producer"
call = "bbmore:Gen"
auto_start = false
args = {{ base = 10 }}

[[stage]]
name = "split"
call = "bbmore:split"
threads = 2
to = ["even"]

[[stage]]
name = "even"
call = "bbmore:aslow"
threads = 8
to = ["keep"]

[[stage]]
name = "odd"
call = "bbstages:negate"

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    stages = {s["name"]: s for s in d.pipeline("route")["stages"]}
    # an async stage counts as one thread of the budget whatever its concurrency: 1+2+1+1+1 fits 6
    assert stages["split"]["threads"] == stages["split"]["requested_threads"] == 2
    assert stages["even"]["threads"] == 8
    assert stages["split"]["downstream"] == ["even"] and stages["odd"]["upstream"] == []
    r = d.client.post("/pipelines/route/stages/gen/trigger?wait=true", json={"args": {"n": 6}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "completed", run
    assert run["items"]["produced"] == 6 and run["items"]["finished"] == 6 and run["items"]["in_flight"] == 0
    assert sorted(json.loads(x) for x in out.read_text().split()) == sorted([10, 12, 14, -11, -13, -15])
    # a class producer gets only the trigger's args in __call__: an __init__ arg is refused
    r = d.client.post("/pipelines/route/stages/gen/trigger", json={"args": {"base": 1}})
    assert r.status_code == 400 and "base" in r.json()["detail"]


def test_accumulator_max_wait_emits_partial_batches_while_the_run_goes_on(shared: DaemonProcess) -> None:
    d = shared
    install_more(d)
    out = d.base_dir / "trickle.out"
    put_toml(d, "trickle", f'''
[[stage]]
name = "gen"
kind = "producer"
call = "bbmore:trickle"
auto_start = false

[[stage]]
name = "acc"
kind = "accumulator"
max_size = 100
max_wait = "100ms"

[[stage]]
name = "keep"
kind = "consumer"
call = "bbmore:stamp"
args = {{ out = "{out}" }}
''')
    r = d.client.post("/pipelines/trickle/stages/gen/trigger", json={"args": {"n": 3, "delay": 0.5}})
    assert r.status_code == 202
    run = r.json()["run"]
    d.wait_for(lambda: out.exists() and out.read_text().strip(), 5, what="a partial batch by max_wait")
    assert run_of(d, "trickle", run)["state"] == "running"
    done = wait_run_done(d, "trickle", run)
    assert done["state"] == "completed" and done["items"]["finished"] == 3
    batches = [json.loads(x)["batch"] for x in out.read_text().splitlines()]
    assert batches == [[0], [1], [2]]


def test_trigger_waiting_across_a_reload_gets_the_cancelled_run(shared: DaemonProcess) -> None:
    d = shared
    install_more(d)
    out = d.base_dir / "acrossreload.out"
    text = f'''
description = "{{desc}}"

[[stage]]
name = "gen"
kind = "producer"
call = "bbmore:trickle"
auto_start = false

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{{{ out = "{out}" }}}}
'''
    put_toml(d, "across", text.format(desc="a"))
    result: dict[str, httpx.Response] = {}

    def waiter() -> None:
        with httpx.Client(base_url=d.url, timeout=60, headers=d.auth_headers) as c:
            result["r"] = c.post("/pipelines/across/stages/gen/trigger?wait=true&timeout=30",
                                 json={"args": {"n": 100, "delay": 0.05}})

    t = threading.Thread(target=waiter)
    t.start()
    d.wait_for(lambda: out.exists() and len(out.read_text().split()) >= 2, 10, what="run under way")
    r = d.client.put("/pipelines/across", content=text.format(desc="b"), headers={"content-type": "application/toml"})
    assert r.status_code == 200, r.text
    t.join(30)
    assert not t.is_alive()
    resp = result["r"]
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "cancelled" and body["items"]["in_flight"] == 0
    assert body["items"]["finished"] == body["items"]["produced"] < 100
    assert len(out.read_text().split()) == body["items"]["produced"]
    assert d.pipeline("across")["description"] == "b"


def test_cli_client_against_the_shared_daemon(shared: DaemonProcess) -> None:
    d = shared

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipelined", *args, "--api", d.url, "--json"],
                              capture_output=True, text=True, timeout=60, env=d.environment())

    p = cli("trigger", "orders", "fetch", "--arg", "limit=7", "--arg", "tag=cli", "--wait")
    assert p.returncode == 0, p.stderr
    run = json.loads(p.stdout)
    assert run["state"] == "completed" and run["items"]["produced"] == 7
    p = cli("trigger", "nested", "par", "--items", "[1, 2]", "--wait")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["items"]["finished"] == 4
    p = cli("stats", "orders")
    assert p.returncode == 0 and json.loads(p.stdout)["pipeline"] == "orders"
    p = cli("reload")
    assert p.returncode == 0, p.stderr
    assert set(json.loads(p.stdout)) == {"added", "updated", "removed", "unchanged", "failed"}
    p = cli("drain", "nested", "--wait")
    assert p.returncode == 0, p.stderr
    assert d.pipeline("nested")["state"] == "drained"
    p = cli("start", "nested")
    assert p.returncode == 0, p.stderr
    assert d.pipeline("nested")["state"] == "running"
    p = cli("graph", "--remote", "nested")
    assert p.returncode == 0, p.stderr
    assert {n["id"] for n in json.loads(p.stdout)["nodes"]} == {"src", "par", "out"}
    p = cli("status")
    assert p.returncode == 0, p.stderr
    assert "orders" in p.stdout
    gone = subprocess.run([sys.executable, "-m", "pipelined", "status", "--api", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60, env=d.environment())
    assert gone.returncode == 1 and "Traceback" not in gone.stderr and gone.stderr.strip()


def test_delete_pipeline_drains_and_removes_its_file(shared: DaemonProcess) -> None:
    d = shared
    r = d.client.delete("/pipelines/putjson")
    assert r.status_code == 200, r.text
    assert not (d.conf_dir / "putjson.toml").exists()
    d.wait_for(lambda: d.client.get("/pipelines/putjson").status_code == 404, 10, what="putjson removed")
    assert d.client.post("/pipelines/putjson/stages/gen/trigger", json={}).status_code == 404
    assert d.pipeline("orders")["state"] == "running"


def test_daemon_stats_totals(shared: DaemonProcess) -> None:
    d = shared
    body = d.client.get("/stats").json()
    names = {p["name"] for p in d.client.get("/pipelines").json()}
    assert body["daemon"]["pipelines"] == len(names) == len(body["pipelines"])
    assert body["daemon"]["pid"] == d.pid and body["daemon"]["processes"] >= 2
    assert body["pipelines"]["orders"]["stages"]["score"]["processes"] == 2


def test_code_reload_under_python_path_reaches_process_workers(shared: DaemonProcess) -> None:
    d = shared
    lib = d.conf_dir / "codelib"
    lib.mkdir()
    mod = lib / "bbcode.py"
    mod.write_text("import os\n\ndef tag(item):\n    return {'v': 1, 'item': item, 'pid': os.getpid()}\n")
    out = d.base_dir / "code.out"
    put_toml(d, "code", f'''
python_path = ["codelib"]

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "tag"
call = "bbcode:tag"
processes = 2
max_items_per_worker = 2

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    r = d.client.post("/pipelines/code/stages/gen/trigger?wait=true", json={"args": {"n": 6}})
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    first = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["item"] for x in first) == list(range(6)) and {x["v"] for x in first} == {1}
    # max_items_per_worker = 2 with two workers: six items need at least three worker processes
    assert len({x["pid"] for x in first}) >= 3

    loaded = d.pipeline("code")["loaded_at"]
    mod.write_text("import os\n\ndef tag(item):\n    return {'v': 2, 'item': item, 'pid': os.getpid()}\n")
    d.wait_for(lambda: d.pipeline("code")["loaded_at"] != loaded and d.pipeline("code")["state"] == "running",
               15, what="code pipeline reloaded after its .py changed")
    out.unlink()
    r = d.client.post("/pipelines/code/stages/gen/trigger?wait=true", json={"args": {"n": 4}})
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    second = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["v"] for x in second} == {2}, second


def test_fork_per_item_with_after_fork_hook_and_a_failing_producer(shared: DaemonProcess) -> None:
    d = shared
    d.write_module("bbfork", '''
import os

FORKED = []


def after_fork():
    FORKED.append(os.getpid())


def forked(item):
    return {"item": item, "forked": FORKED == [os.getpid()]}


def boom(n=3):
    for i in range(n):
        yield i
    raise KeyError("producer broke")
''')
    out = d.base_dir / "fork.out"
    put_toml(d, "forky", f'''
[hooks]
after_fork = "bbfork:after_fork"

[[stage]]
name = "gen"
kind = "producer"
call = "bbfork:boom"
auto_start = false

[[stage]]
name = "work"
call = "bbfork:forked"
processes = 2
process_mode = "fork_per_item"

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    r = d.client.post("/pipelines/forky/stages/gen/trigger?wait=true", json={"args": {"n": 4}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "failed" and "producer broke" in (run["error"] or ""), run
    assert run["items"]["produced"] == 4 and run["items"]["finished"] == 4 and run["items"]["dead_lettered"] == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["item"] for x in got) == [0, 1, 2, 3]
    assert all(x["forked"] for x in got), got


def test_drain_mid_run_flushes_the_partial_batch_of_a_process_fed_accumulator(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "ordersd.out"
    put_toml(d, "ordersd", orders_toml(out, description="drain", score_delay=0.005).replace("max_size = 3", "max_size = 1000"))
    r = d.client.post("/pipelines/ordersd/stages/fetch/trigger", json={"args": {"limit": 5000, "delay": 0.002}})
    assert r.status_code == 202
    run = r.json()["run"]
    d.wait_for(lambda: run_of(d, "ordersd", run)["items"]["produced"] >= 40, 10, what="run producing")
    assert not out.exists()  # nothing reached the consumer yet: the batch is not full
    r = d.client.post("/pipelines/ordersd/drain?wait=true&timeout=20")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "drained" and r.json()["runs"]["active"] == 0
    body = run_of(d, "ordersd", run)
    assert body["state"] == "cancelled", body
    items = body["items"]
    assert items["in_flight"] == 0 and items["dead_lettered"] == 0 and items["finished"] == 1, body
    assert saved_ids(out, run) == expected_ids(items["produced"])
    assert d.client.post("/pipelines/ordersd/stages/fetch/trigger", json={}).status_code == 409
    assert d.client.delete("/pipelines/ordersd").status_code == 200


def test_drop_oldest_and_reject_account_for_every_item(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "drop.out"
    put_toml(d, "droppy", f'''
[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "slow"
call = "bbstages:slow"
queue_size = 2
on_full = "drop_oldest"
args = {{ delay = 0.05 }}

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    r = d.client.post("/pipelines/droppy/stages/gen/trigger?wait=true", json={"args": {"n": 30}})
    assert r.status_code == 200, r.text
    run = r.json()
    items = run["items"]
    assert items["produced"] == 30 and items["in_flight"] == 0
    assert items["dead_lettered"] > 0 and items["finished"] + items["dead_lettered"] == 30, run
    assert run["state"] == "failed"
    letters = [x for x in d.client.get("/pipelines/droppy/dead-letters?limit=100").json() if x["run"] == run["run"]]
    assert len(letters) == items["dead_lettered"] and {x["error"] for x in letters} == {"dropped"}
    done = [json.loads(x) for x in out.read_text().split()]
    assert sorted(done + [x["item"] for x in letters]) == list(range(30))
    assert stats(d, "droppy")["stages"]["slow"]["items_dropped"] == items["dead_lettered"]

    put_toml(d, "rejecty", '''
[[stage]]
name = "slow"
call = "bbstages:slow"
queue_size = 3
on_full = "reject"
args = { delay = 0.01 }
''')
    before = stats(d, "rejecty")["runs"]["started"]
    r = d.client.post("/pipelines/rejecty/stages/slow/trigger", json={"items": [1, 2, 3, 4, 5]})
    assert r.status_code == 429 and r.json()["status_code"] == 429, r.text
    r = d.client.post("/pipelines/rejecty/stages/slow/trigger?wait=true", json={"items": [1, 2, 3]})
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    assert r.json()["items"]["finished"] == 3
    st = stats(d, "rejecty")
    assert st["stages"]["slow"]["items_in"] == 3 and st["runs"]["started"] - before == 1


def test_disabled_pipeline_and_scaled_limits(shared: DaemonProcess) -> None:
    d = shared
    d.write_pipeline("off", '''
enabled = false

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = { out = "/dev/null" }
''')
    d.wait_state("off", "disabled", timeout=10)
    assert d.client.post("/pipelines/off/stages/gen/trigger", json={}).status_code == 409
    assert d.client.post("/pipelines/off/drain").status_code == 409

    put_toml(d, "tight", '''
max_threads = 3

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "wide"
call = "bbstages:double"
threads = 4

[[stage]]
name = "mid"
call = "bbstages:negate"
threads = 2

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = { out = "/dev/null" }
''')
    stages = {s["name"]: s for s in d.pipeline("tight")["stages"]}
    assert (stages["wide"]["threads"], stages["wide"]["requested_threads"]) == (1, 4)
    assert (stages["mid"]["threads"], stages["mid"]["requested_threads"]) == (1, 2)
    graph = {n["id"]: n for n in d.client.get("/pipelines/tight/graph").json()["nodes"]}
    assert graph["wide"]["threads"] == 1
    r = d.client.post("/pipelines/tight/stages/gen/trigger?wait=true", json={"args": {"n": 20}})
    assert r.status_code == 200 and r.json()["items"]["finished"] == 20
    lines = [x for x in d.logs().splitlines() if "wide" in x and "4" in x and "tight" in x and "WARN" in x.upper()]
    assert len(lines) == 1, lines


BACKLOG = '''
description = "{desc}"
drain_timeout = "{drain}"

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:fetch_new"
auto_start = false

[[stage]]
name = "work"
call = "bbstages:Scorer"
processes = 2
args = {{ delay = {delay} }}

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:save_batch"
args = {{ out = "{out}" }}
'''


def test_sigterm_during_a_reload_swap_and_new_work_refused_while_stopping(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "a")
    out = d.base_dir / "b.out"
    d.write_module("bbstages", STAGES.replace("def save_batch(batch, out, ctx):\n    line",
                                              "def save_batch(batch, out, ctx):\n    batch = [batch]\n    line"))
    d.write_pipeline("b", BACKLOG.format(desc="v1", drain="10s", delay=0.05, out=out))
    try:
        d.start()
        r = d.client.post("/pipelines/b/stages/gen/trigger", json={"args": {"limit": 100000, "delay": 0.002}})
        assert r.status_code == 202
        run = r.json()["run"]
        d.wait_for(lambda: run_of(d, "b", run)["items"]["produced"] >= 40, 10, what="backlog building")
        d.write_pipeline("b", BACKLOG.format(desc="v2", drain="10s", delay=0.0, out=out))
        d.send_signal(signal.SIGHUP)
        d.wait_for(lambda: d.pipeline("b")["state"] == "draining", 10, interval=0.005, what="swap under way")
        d.send_signal(signal.SIGTERM)
        d.wait_for(lambda: d.client.get("/health").status_code == 503, 5, interval=0.005, what="health 503")
        assert d.client.get("/health").json()["status"] == "stopping"
        r = d.client.post("/pipelines/b/stages/gen/trigger", json={})
        assert r.status_code in (503, 409), r.text
        assert d.wait_exit(20) == 0
        consumed = [i for rec in saved(out) for i in rec["ids"]]
        assert len(consumed) == len(set(consumed))

        d2 = DaemonProcess(tmp_path / "a")
        d2.start()
        letters = d2.client.get("/pipelines/b/dead-letters?limit=1000").json()
        assert {x["error"] for x in letters} <= {"shutdown"}
        lost = [x["item"]["id"] for x in letters]
        assert set(lost).isdisjoint(consumed)
        assert d2.pipeline("b")["description"] == "v2"
        assert d2.stop() == 0
    finally:
        d.close()

    s = DaemonProcess(tmp_path / "s")
    s.write_module("bbstages", STAGES)
    s.write_pipeline("b", BACKLOG.format(desc="v1", drain="60s", delay=0.5, out=s.base_dir / "s.out"))
    try:
        s.start()
        r = s.client.post("/pipelines/b/stages/gen/trigger", json={"args": {"limit": 200}})
        assert r.status_code == 202
        s.wait_for(lambda: stats(s, "b")["stages"]["work"]["queue_depth"] > 10, 10, what="backlog")
        s.send_signal(signal.SIGINT)
        s.wait_for(lambda: s.client.get("/health").status_code == 503, 5, interval=0.005, what="stopping")
        s.send_signal(signal.SIGINT)
        assert s.wait_exit(10) == 130
    finally:
        s.close()


HOOKS = '''
import json, os, time


def _log(kind, run):
    with open(os.environ["BB_HOOKS"], "a") as fh:
        fh.write(json.dumps({"kind": kind, "run": str(getattr(run, "run", None) or getattr(run, "id", None) or run)}) + "\\n")


def before_run(run):
    _log("before", run)


def after_run(run):
    _log("after", run)


def bad_batch(batch):
    if -10 in batch:
        raise ValueError("batch with -10")


def auto(n=2):
    return [f"auto-{i}" for i in range(n)]


def tick(n=2, delay=0.3):
    for i in range(n):
        time.sleep(delay)
        yield i
'''


def test_run_hooks_once_per_run_batch_dead_letters_wait_timeout_and_auto_start(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, env={"BB_HOOKS": str(tmp_path / "hooks.jsonl")})
    d.write_module("bbstages", STAGES)
    d.write_module("bbhooks", HOOKS)
    out = tmp_path / "auto.out"
    d.write_pipeline("hooked", '''
max_retries = 1
retry_backoff = "1ms"

[hooks]
before_run = "bbhooks:before_run"
after_run = "bbhooks:after_run"

[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "inner"
kind = "pipeline"

  [[stage.stage]]
  name = "x2"
  call = "bbstages:double"
  processes = 2

  [[stage.stage]]
  name = "neg"
  call = "bbstages:negate"

[[stage]]
name = "acc"
kind = "accumulator"
max_size = 2

[[stage]]
name = "store"
kind = "consumer"
call = "bbhooks:bad_batch"
''')
    d.write_pipeline("ticks", '''
[[stage]]
name = "gen"
kind = "producer"
call = "bbhooks:tick"
auto_start = false
threads = 2

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = { out = "/dev/null" }
''')
    d.write_pipeline("auto", f'''
[[stage]]
name = "gen"
kind = "producer"
call = "bbhooks:auto"
args = {{ n = 2 }}

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    try:
        d.start()
        r = d.client.post("/pipelines/hooked/stages/gen/trigger?wait=true", json={"args": {"n": 6}})
        assert r.status_code == 200, r.text
        run = r.json()
        # items 0..5 -> x2 (processes) -> negate -> batches of 2 -> a consumer that fails one batch
        assert run["state"] == "failed" and run["error"], run
        assert run["items"] == {"produced": 6, "in_flight": 0, "finished": 2, "filtered": 0, "dead_lettered": 1}
        (letter,) = d.client.get("/pipelines/hooked/dead-letters").json()
        assert letter["stage"] == "store" and letter["attempts"] == 2 and "batch with -10" in letter["error"]
        assert isinstance(letter["item"], list) and len(letter["item"]) == 2 and -10 in letter["item"]
        st = stats(d, "hooked")["stages"]
        assert st["inner"]["kind"] == "pipeline" and st["x2"]["items_in"] == 6 and st["acc"]["items_out"] == 3
        hooks = [json.loads(x) for x in (tmp_path / "hooks.jsonl").read_text().splitlines()]
        assert [h["kind"] for h in hooks] == ["before", "after"], hooks
        assert run["run"] in hooks[0]["run"]

        # ?wait with a short timeout: 202 with the run object, still running
        r = d.client.post("/pipelines/ticks/stages/gen/trigger?wait=true&timeout=0.2", json={"args": {"n": 3}})
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "running" and r.json()["finished_at"] is None
        # producer threads = 2: three runs at once are all accepted; all complete
        ids = [d.client.post("/pipelines/ticks/stages/gen/trigger", json={"args": {"n": 1, "delay": 0.2}}).json()["run"]
               for _ in range(3)]
        for rid in [r.json()["run"], *ids]:
            assert wait_run_done(d, "ticks", rid)["state"] == "completed"
        listed = [x["run"] for x in d.client.get("/pipelines/ticks/runs").json()]
        assert listed[:4] == [*reversed(ids), r.json()["run"]]

        # auto_start: a run at start, another after a reload of a changed file, another after /start
        d.wait_for(lambda: len(out.read_text().split()) == 2 if out.exists() else False, 10, what="auto run")
        d.write_pipeline("auto", (d.conf_dir / "auto.toml").read_text() + "\n# changed\n")
        assert d.client.post("/reload").json()["updated"] == ["auto"]
        d.wait_for(lambda: len(out.read_text().split()) == 4, 10, what="auto run after reload")
        assert d.client.post("/pipelines/auto/drain?wait=true").status_code == 200
        assert d.client.post("/pipelines/auto/start").status_code == 200
        d.wait_for(lambda: len(out.read_text().split()) == 6, 10, what="auto run after start")
        # the consumer wrote the items a moment before the run ended: poll
        d.wait_for(lambda: stats(d, "auto")["runs"]["completed"] == 3, 5, what="three completed auto runs")
        assert d.stop() == 0
    finally:
        d.close()


EDGE = '''
import os, threading


class Picky:
    def __init__(self, fail_setup=False):
        self.fail_setup = fail_setup

    def setup(self):
        if self.fail_setup:
            raise RuntimeError("setup refused")

    def __call__(self, item):
        return item + 1


def crash_once(item, marks):
    path = os.path.join(marks, f"crash-{item}")
    if item == 2 and not os.path.exists(path):
        open(path, "w").close()
        os._exit(1)
    return item


def make_lock(item):
    return threading.Lock()


def dyn(item, ctx):
    ctx.emit_to("no" + "where", item)


def bad_after_fork():
    raise RuntimeError("no fork for you")
'''


def test_failed_setup_on_reload_keeps_old_version_crashed_worker_retried_and_bad_outputs(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path)
    d.write_module("bbstages", STAGES)
    d.write_module("bbedge", EDGE)
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "edge.out"
    picky = '''
[[stage]]
name = "p"
call = "bbedge:Picky"
processes = {procs}
args = {{ fail_setup = {fail} }}
'''
    good = file_version(d.write_pipeline("picky", picky.format(procs=1, fail="false")))
    d.write_pipeline("crashy", f'''
retry_backoff = "1ms"

[[stage]]
name = "c"
call = "bbedge:crash_once"
processes = 1
args = {{ marks = "{marks}" }}

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
''')
    d.write_pipeline("outs", '''
max_retries = 0

[[stage]]
name = "lock"
call = "bbedge:make_lock"
processes = 1

[[stage]]
name = "dyn"
call = "bbedge:dyn"
''')
    d.write_pipeline("forkfail", '''
[hooks]
after_fork = "bbedge:bad_after_fork"

[[stage]]
name = "p"
call = "bbedge:Picky"
processes = 1
''')
    try:
        d.start()
        assert d.pipeline("forkfail")["state"] == "failed"
        assert "no fork for you" in (d.pipeline("forkfail")["error"] or "")
        assert d.client.post("/pipelines/forkfail/stages/p/trigger", json={"items": [1]}).status_code == 409
        assert d.pipeline("picky")["state"] == "running"

        # a new version whose setup() raises: the reload fails and the old version is restored
        d.write_pipeline("picky", picky.format(procs=1, fail="true"))
        result = d.client.post("/reload").json()
        assert "picky" in result["failed"] and "setup refused" in result["failed"]["picky"], result
        detail = d.pipeline("picky")
        assert detail["state"] == "running" and detail["version"] == good, detail
        assert detail["last_reload"]["ok"] is False
        r = d.client.post("/pipelines/picky/stages/p/trigger?wait=true", json={"items": [1, 2]})
        assert r.status_code == 200 and r.json()["state"] == "completed", r.text

        # a worker that dies holding an item is replaced and the item retried
        r = d.client.post("/pipelines/crashy/stages/c/trigger?wait=true", json={"items": [1, 2, 3]})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "completed" and r.json()["items"]["finished"] == 3, r.json()
        assert sorted(json.loads(x) for x in out.read_text().split()) == [1, 2, 3]
        c = stats(d, "crashy")["stages"]["c"]
        assert c["items_failed"] == 1 and c["items_retried"] == 1 and c["items_in"] == 3

        # an unpicklable result of a process stage, and an emit_to target unknown at run time
        r = d.client.post("/pipelines/outs/stages/lock/trigger?wait=true", json={"items": [1]})
        assert r.status_code == 200 and r.json()["state"] == "failed", r.text
        r = d.client.post("/pipelines/outs/stages/dyn/trigger?wait=true", json={"items": [5]})
        assert r.status_code == 200 and r.json()["state"] == "failed", r.text
        letters = {x["stage"]: x for x in d.client.get("/pipelines/outs/dead-letters").json()}
        assert set(letters) == {"lock", "dyn"}
        assert "lock" in letters["lock"]["error"].lower() and letters["lock"]["item"] == 1
        assert "nowhere" in letters["dyn"]["error"] and letters["dyn"]["item"] == 5
        assert d.stop() == 0
    finally:
        d.close()


def test_partial_batch_of_one_run_flows_while_another_run_is_still_producing(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "twoRuns.out"
    text = orders_toml(out, description="two runs", score_delay=0.0, max_wait="1h").replace("max_size = 3", "max_size = 1000000")
    text = text.replace('auto_start = false\n', 'auto_start = false\nthreads = 2\n', 1)
    put_toml(d, "tworuns", text)
    orders_loaded = d.pipeline("orders")["loaded_at"]
    r = d.client.post("/pipelines/tworuns/stages/fetch/trigger", json={"args": {"limit": 100000, "delay": 0.01}})
    assert r.status_code == 202
    long_run = r.json()["run"]
    d.wait_for(lambda: run_of(d, "tworuns", long_run)["items"]["produced"] >= 5, 10, what="long run producing")
    r = d.client.post("/pipelines/tworuns/stages/fetch/trigger?wait=true&timeout=10", json={"args": {"limit": 7}})
    assert r.status_code == 200, r.text
    short = r.json()
    assert short["state"] == "completed" and short["items"]["finished"] == 1, short
    assert saved_ids(out, short["run"]) == expected_ids(7)
    assert saved_ids(out, long_run) == []  # its batch is not full and its producer goes on
    assert run_of(d, "tworuns", long_run)["state"] == "running"
    # another pipeline's reload never disturbed orders
    assert d.pipeline("orders")["loaded_at"] == orders_loaded
    assert d.client.delete("/pipelines/tworuns").status_code == 200
    done = wait_run_done(d, "tworuns", long_run) if d.client.get("/pipelines/tworuns").status_code == 200 else None
    assert done is None or done["state"] == "cancelled"
    produced = len({i for rec in saved(out) if rec["run"] == long_run for i in rec["ids"]})
    assert produced > 0  # the drain flushed the long run's partial batch


def test_run_ids_stay_unique_across_reloads_drains_and_restarts_of_a_version(shared: DaemonProcess) -> None:
    d = shared
    listed = d.client.get("/pipelines/orders/runs").json()
    ids = [x["run"] for x in listed]
    # orders ran in three versions (v1, v2, v3) and after a drain + start
    assert len(ids) >= 8 and len(ids) == len(set(ids)), ids
    started = [x["started_at"] for x in listed]
    assert started == sorted(started, reverse=True)  # newest first
    for x in listed:
        assert x["state"] in ("completed", "failed", "cancelled"), x
        assert run_of(d, "orders", x["run"])["run"] == x["run"]
    assert d.client.get("/pipelines/orders/runs/r-nope").status_code == 404


def test_drain_deadline_with_a_process_stage_then_a_swap_deadline(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "slowproc.out"
    put_toml(d, "slowproc", slow_process_pipeline(out, delay=0.25, drain_timeout="500ms", desc="a"))

    def consumed() -> list[int]:
        return [json.loads(x) for x in out.read_text().split()] if out.exists() else []

    def check_run(rid: str) -> dict[str, Any]:
        body = wait_run_done(d, "slowproc", rid)
        items = body["items"]
        assert body["state"] == "failed" and items["in_flight"] == 0, body
        assert items["produced"] == 20 and items["dead_lettered"] > 0, body
        assert items["finished"] + items["dead_lettered"] == 20, body
        letters = [x for x in d.client.get("/pipelines/slowproc/dead-letters?limit=1000").json() if x["run"] == rid]
        assert len(letters) == items["dead_lettered"] and {x["error"] for x in letters} == {"shutdown"}
        lost = {x["item"] for x in letters}
        return {"lost": lost, "finished": items["finished"]}

    # an API drain that hits drain_timeout
    rid = d.client.post("/pipelines/slowproc/stages/gen/trigger", json={"args": {"n": 20}}).json()["run"]
    d.wait_for(lambda: len(consumed()) >= 1, 10, what="first item through")
    r = d.client.post("/pipelines/slowproc/drain?wait=true&timeout=10")
    assert r.status_code == 200 and r.json()["state"] == "drained", r.text
    first = check_run(rid)
    d.wait_for(lambda: len(consumed()) == first["finished"], 2, what="consumer count == finished")
    assert set(consumed()).isdisjoint(first["lost"]) and set(consumed()) | first["lost"] == set(range(20))
    assert d.client.post("/pipelines/slowproc/start").status_code == 200

    # a reload swap that hits drain_timeout; a trigger with items during the swap goes to the new version
    out.unlink()
    rid = d.client.post("/pipelines/slowproc/stages/gen/trigger", json={"args": {"n": 20}}).json()["run"]
    d.wait_for(lambda: len(consumed()) >= 1, 10, what="first item through")
    new = d.write_pipeline("slowproc", slow_process_pipeline(out, delay=0.0, drain_timeout="500ms", desc="b"))
    d.wait_for(lambda: d.pipeline("slowproc")["state"] == "draining", 10, interval=0.005, what="swap under way")
    r = d.client.post("/pipelines/slowproc/stages/work/trigger?wait=true", json={"items": [100, 101]})
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    d.wait_version("slowproc", file_version(new))
    second = check_run(rid)
    got = set(consumed()) - {100, 101}
    assert got.isdisjoint(second["lost"]) and got | second["lost"] == set(range(20))
    assert {100, 101} <= set(consumed())
    assert d.client.delete("/pipelines/slowproc").status_code == 200


def test_check_cli_on_the_live_conf_dir(shared: DaemonProcess) -> None:
    d = shared

    def check(*paths: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipelined", "check", *paths],
                              capture_output=True, text=True, timeout=60, env=d.environment())

    route = check(str(d.conf_dir / "route.toml"))
    assert route.returncode == 0, route.stdout + route.stderr
    # "odd" is reached only by a literal ctx.emit_to("odd", ...): not a stage that nothing can reach
    assert not [x for x in (route.stdout + route.stderr).splitlines() if "warning" in x and "odd" in x]
    bad = d.conf_dir / "Bad-Name.toml"
    bad.write_text((d.conf_dir / "nested.toml").read_text())
    try:
        whole = check(str(d.conf_dir))
        assert whole.returncode == 1, whole.stdout + whole.stderr
        assert "Bad-Name.toml" in whole.stdout + whole.stderr
    finally:
        bad.unlink()
    assert check(str(d.conf_dir)).returncode == 0


def test_disabling_by_edit_mid_run_then_enabling_again(shared: DaemonProcess) -> None:
    d = shared
    out = d.base_dir / "toggle.out"
    text = orders_toml(out, description="toggle", score_delay=0.002)
    put_toml(d, "toggle", text)
    rid = d.client.post("/pipelines/toggle/stages/fetch/trigger", json={"args": {"limit": 100000, "delay": 0.002}}).json()["run"]
    d.wait_for(lambda: saved_ids(out, rid), 10, what="run flowing")
    d.write_pipeline("toggle", "enabled = false\n" + text)
    d.wait_state("toggle", "disabled", timeout=15)
    body = wait_run_done(d, "toggle", rid)
    assert body["state"] == "cancelled" and body["items"]["in_flight"] == 0 and body["items"]["dead_lettered"] == 0, body
    assert saved_ids(out, rid) == expected_ids(body["items"]["produced"])
    assert d.client.post("/pipelines/toggle/stages/fetch/trigger", json={}).status_code == 409
    r = d.client.put("/pipelines/toggle", content=text, headers={"content-type": "application/toml"})
    assert r.status_code == 200, r.text
    d.wait_state("toggle", "running", timeout=15)
    r = d.client.post("/pipelines/toggle/stages/fetch/trigger?wait=true", json={"args": {"limit": 10}})
    assert r.status_code == 200 and r.json()["state"] == "completed" and r.json()["items"]["finished"] == 3
    assert d.client.delete("/pipelines/toggle").status_code == 200


def test_dead_letter_file_rotates_at_64_mib_and_is_read_back(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path)
    d.write_module("bbbig", '''
def big(n=70):
    for i in range(n):
        yield {"i": i, "pad": "x" * (1 << 20)}


def refuse(item):
    raise ValueError(f"no {item['i']}")
''')
    d.write_pipeline("big", '''
max_retries = 0

[[stage]]
name = "gen"
kind = "producer"
call = "bbbig:big"
auto_start = false

[[stage]]
name = "no"
call = "bbbig:refuse"
''')
    d2: DaemonProcess | None = None
    try:
        d.start()
        r = d.client.post("/pipelines/big/stages/gen/trigger?wait=true&timeout=60", json={"args": {"n": 70}})
        assert r.status_code == 200 and r.json()["items"]["dead_lettered"] == 70, r.text
        files = sorted(p.name for p in (tmp_path / "state" / "dead-letters").iterdir())
        assert len(files) == 2 and "big.jsonl" in files, files
        current = tmp_path / "state" / "dead-letters" / "big.jsonl"
        assert current.stat().st_size <= 64 << 20
        assert d.stop() == 0
        d2 = DaemonProcess(tmp_path)
        d2.start()
        letters = d2.client.get("/pipelines/big/dead-letters?limit=3").json()
        # 1 MiB items: memory holds the start of their JSON (docs/api.md), the file all of it
        assert all(x["truncated"] for x in letters)
        assert [x["item"][: len('{"i":69,')] for x in letters] == ['{"i":69,', '{"i":68,', '{"i":67,']
        assert letters[0]["error"].startswith("ValueError") or "ValueError" in letters[0]["error"]
        assert d2.stop() == 0
    finally:
        d.close()
        if d2 is not None:
            d2.close()


def test_queued_triggers_end_when_the_pipeline_drains_or_reloads(shared: DaemonProcess) -> None:
    d = shared
    install_more(d)
    text = '''
description = "{desc}"

[[stage]]
name = "gen"
kind = "producer"
call = "bbmore:trickle"
auto_start = false

[[stage]]
name = "keep"
kind = "consumer"
call = "bbstages:sink"
args = { out = "/dev/null" }
'''
    put_toml(d, "queued", text.replace("{desc}", "a"))

    def trigger() -> str:
        r = d.client.post("/pipelines/queued/stages/gen/trigger", json={"args": {"n": 1000, "delay": 0.01}})
        assert r.status_code == 202, r.text
        return str(r.json()["run"])

    first, waiting = trigger(), trigger()  # threads = 1: the second waits its turn
    d.wait_for(lambda: run_of(d, "queued", first)["items"]["produced"] > 0, 10, what="first run producing")
    assert run_of(d, "queued", waiting)["items"]["produced"] == 0
    r = d.client.post("/pipelines/queued/drain?wait=true&timeout=10")
    assert r.status_code == 200, r.text
    for rid in (first, waiting):
        body = wait_run_done(d, "queued", rid, timeout=5)
        assert body["state"] == "cancelled" and body["items"]["in_flight"] == 0, body
    assert d.client.post("/pipelines/queued/start").status_code == 200

    first, waiting = trigger(), trigger()
    d.wait_for(lambda: run_of(d, "queued", first)["items"]["produced"] > 0, 10, what="first run producing")
    r = d.client.put("/pipelines/queued", content=text.replace("{desc}", "b"), headers={"content-type": "application/toml"})
    assert r.status_code == 200, r.text
    assert wait_run_done(d, "queued", first, timeout=5)["state"] == "cancelled"
    body = wait_run_done(d, "queued", waiting, timeout=10)
    assert body["state"] in ("cancelled", "completed"), body
    r = d.client.post("/pipelines/queued/stages/gen/trigger?wait=true", json={"args": {"n": 2, "delay": 0}})
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    assert d.client.delete("/pipelines/queued").status_code == 200


STOPPERS = '''
import asyncio, time


def polling(ctx, period=0.005):
    i = 0
    while not ctx.stopping:
        ctx.emit(i)
        i += 1
        time.sleep(period)
    return []


async def agen(n=100000):
    for i in range(n):
        await asyncio.sleep(0.005)
        yield i
'''


def test_ctx_stopping_and_async_generator_producers_stop_on_drain_with_broadcast_counts(shared: DaemonProcess) -> None:
    d = shared
    d.write_module("bbstop", STOPPERS)
    out = d.base_dir / "stop.out"
    put_toml(d, "stoppers", f'''
[[stage]]
name = "poll"
kind = "producer"
call = "bbstop:polling"
auto_start = false

[[stage]]
name = "agen"
kind = "producer"
call = "bbstop:agen"
auto_start = false

[[stage]]
name = "fan"
call = "bbstages:double"
to = ["k1", "k2"]
fanout = "broadcast"

[[stage]]
name = "k1"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}

[[stage]]
name = "k2"
kind = "consumer"
call = "bbstages:sink"
args = {{ out = "{out}" }}
from = ["fan"]
''')
    runs = [d.client.post(f"/pipelines/stoppers/stages/{s}/trigger", json={}).json()["run"] for s in ("poll", "agen")]
    d.wait_for(lambda: all(run_of(d, "stoppers", r)["items"]["produced"] >= 5 for r in runs), 10, what="both producing")
    r = d.client.post("/pipelines/stoppers/drain?wait=true&timeout=10")
    assert r.status_code == 200, r.text
    total = 0
    for rid in runs:
        body = run_of(d, "stoppers", rid)
        items = body["items"]
        assert body["state"] == "cancelled" and items["in_flight"] == 0 and items["dead_lettered"] == 0, body
        assert items["finished"] == 2 * items["produced"], body  # each broadcast copy counts
        total += items["finished"]
    assert len(out.read_text().split()) == total
    st = stats(d, "stoppers")["stages"]
    assert st["fan"]["items_out"] * 2 == st["k1"]["items_in"] + st["k2"]["items_in"]
    graph = d.client.get("/pipelines/stoppers/graph").json()
    routes = {(e["from"], e["to"]): e["route"] for e in graph["edges"]}
    assert routes[("fan", "k1")] == routes[("fan", "k2")] == "broadcast"
    assert routes[("poll", "fan")] == "direct" and routes[("agen", "fan")] == "direct"
    assert d.client.delete("/pipelines/stoppers").status_code == 200


def test_trigger_during_a_swap_whose_new_version_fails_is_answered_by_the_restored_version(shared: DaemonProcess) -> None:
    d = shared
    d.write_module("bbpicky", '''
import time


class Picky:
    def __init__(self, fail_setup=False, delay=0.0):
        self.fail_setup, self.delay = fail_setup, delay

    def setup(self):
        if self.fail_setup:
            raise RuntimeError("setup refused")

    def __call__(self, item):
        time.sleep(self.delay)
        return item
''')
    text = '''
[[stage]]
name = "gen"
kind = "producer"
call = "bbstages:numbers"
auto_start = false

[[stage]]
name = "p"
call = "bbpicky:Picky"
processes = 2
args = {{ fail_setup = {fail}, delay = 0.02 }}
'''
    put_toml(d, "restore", text.format(fail="false"))
    good = d.pipeline("restore")["version"]
    rid = d.client.post("/pipelines/restore/stages/gen/trigger", json={"args": {"n": 80}}).json()["run"]
    d.wait_for(lambda: stats(d, "restore")["stages"]["p"]["items_out"] >= 2, 10, what="items flowing")
    d.write_pipeline("restore", text.format(fail="true"))
    d.wait_for(lambda: d.pipeline("restore")["state"] == "draining", 10, interval=0.005, what="swap under way")
    r = d.client.post("/pipelines/restore/stages/p/trigger?wait=true&timeout=20", json={"items": [1, 2, 3]})
    assert r.status_code in (200, 503), r.text
    if r.status_code == 200:
        assert r.json()["state"] == "completed" and r.json()["items"]["finished"] == 3, r.json()
    detail = d.wait_state("restore", "running", timeout=15)
    assert detail["version"] == good and detail["last_reload"]["ok"] is False
    assert "setup refused" in (detail["last_reload"]["error"] or "")
    old = wait_run_done(d, "restore", rid)
    assert old["items"]["in_flight"] == 0 and old["items"]["finished"] + old["items"]["dead_lettered"] == 80, old
    r = d.client.post("/pipelines/restore/stages/gen/trigger?wait=true", json={"args": {"n": 4}})
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    assert d.client.delete("/pipelines/restore").status_code == 200


def test_daemon_process_budget_is_taken_in_start_order_and_never_rescaled(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, settings="[daemon]\nmax_processes = 3\n")
    d.write_module("bbstages", STAGES)
    proc = '''
[[stage]]
name = "work"
call = "bbstages:double"
processes = 2
'''
    d.write_pipeline("first", proc)
    try:
        d.start()
        assert d.pipeline("first")["stages"][0]["processes"] == 2
        d.write_pipeline("second", proc)
        assert d.client.post("/reload").json()["added"] == ["second"]
        second = d.pipeline("second")["stages"][0]
        assert (second["processes"], second["requested_processes"]) == (1, 2), second
        assert d.pipeline("first")["stages"][0]["processes"] == 2  # not rescaled
        for name in ("first", "second"):
            r = d.client.post(f"/pipelines/{name}/stages/work/trigger?wait=true", json={"items": [1, 2, 3]})
            assert r.status_code == 200 and r.json()["state"] == "completed", r.text
        assert d.client.get("/stats").json()["daemon"]["processes"] >= 3
        warned = [x for x in d.logs().splitlines() if "second" in x and "WARN" in x.upper() and "processes" in x]
        assert len(warned) == 1, warned
        assert d.stop() == 0
    finally:
        d.close()
