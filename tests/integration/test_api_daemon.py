"""The HTTP API against a real `pipelined run` (token + config writes on), one daemon per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import DaemonProcess, file_version, write_token

JSON = {"Content-Type": "application/json"}
TOKEN = "integration-token-123"

STAGES = """
import time

def produce(n=3, start=0):
    for i in range(start, start + n):
        yield i

def double(x):
    return x * 2

def fail(x):
    raise ValueError(f"cannot take {x!r}")

def slow(x, seconds=0.3):
    time.sleep(seconds)
    return x

def sink(x):
    pass
"""

ORDERS = """
description = "orders for the API tests"

[[stage]]
name = "read"
kind = "producer"
call = "apistages:produce"
auto_start = false

[[stage]]
name = "double"
call = "apistages:double"

[[stage]]
name = "store"
kind = "consumer"
call = "apistages:sink"
"""

FAILING = """
max_retries = 0

[[stage]]
name = "src"
kind = "producer"
call = "apistages:produce"
auto_start = false

[[stage]]
name = "boom"
call = "apistages:fail"

[[stage]]
name = "sink"
kind = "consumer"
call = "apistages:sink"
"""

TIGHT = """
[[stage]]
name = "gate"
call = "apistages:slow"
queue_size = 2
on_full = "reject"

[[stage]]
name = "sink"
kind = "consumer"
call = "apistages:sink"
"""


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("api")
    token_file = base / "token"
    write_token(token_file, TOKEN)
    daemon = DaemonProcess(base, settings=f'[api]\ntoken_file = "{token_file}"\nconfig_write = true\n')
    daemon.write_module("apistages", STAGES)
    for name, text in (("orders", ORDERS), ("failing", FAILING), ("tight", TIGHT)):
        daemon.write_pipeline(name, text)
    daemon.start()
    daemon.client.headers["Authorization"] = f"Bearer {TOKEN}"
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def api(api_daemon: DaemonProcess) -> httpx.Client:
    return api_daemon.client


def error(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status_code"] == status
    for word in words:
        assert word in body["detail"], body
    return dict(body)


def test_token_is_required_except_for_probes(api_daemon: DaemonProcess) -> None:
    with httpx.Client(base_url=api_daemon.url, timeout=10) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert anonymous.get("/ready").json() == {"status": "ready"}
        error(anonymous.get("/pipelines"), 401, "Bearer")
        error(anonymous.get("/pipelines", headers={"Authorization": "Bearer nope"}), 401)
        error(anonymous.get("/schema/openapi.json"), 401)


def test_list_and_detail(api: httpx.Client, api_daemon: DaemonProcess) -> None:
    pipelines = api.get("/pipelines").json()
    assert [p["name"] for p in pipelines] == ["failing", "orders", "tight"]
    orders = next(p for p in pipelines if p["name"] == "orders")
    assert orders["state"] == "running" and orders["stages"] == 3 and orders["error"] is None
    assert orders["version"] == file_version(api_daemon.conf_dir / "orders.toml")
    detail = api.get("/pipelines/orders").json()
    assert detail["description"] == "orders for the API tests"
    assert [s["name"] for s in detail["stages"]] == ["read", "double", "store"]
    assert detail["stages"][1]["upstream"] == ["read"] and detail["stages"][1]["downstream"] == ["store"]
    error(api.get("/pipelines/ghost"), 404, "ghost")


def test_trigger_producer_and_wait(api: httpx.Client) -> None:
    r = api.post("/pipelines/orders/stages/read/trigger?wait=true&timeout=20", json={"args": {"n": 4}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "completed" and run["finished_at"] is not None
    assert run["items"]["produced"] == 4 and run["items"]["finished"] == 4 and run["items"]["in_flight"] == 0
    assert api.get(f"/pipelines/orders/runs/{run['run']}").json()["run"] == run["run"]
    assert run["run"] in [r["run"] for r in api.get("/pipelines/orders/runs").json()]


def test_trigger_without_wait_is_202(api: httpx.Client) -> None:
    r = api.post("/pipelines/orders/stages/double/trigger", json={"items": [1, 2, 3]})
    assert r.status_code == 202
    assert set(r.json()) == {"run", "pipeline", "stage"} and r.json()["stage"] == "double"


def test_trigger_errors(api: httpx.Client) -> None:
    trigger = "/pipelines/orders/stages/{}/trigger"
    error(api.post(trigger.format("read"), json={"args": {"nope": 1}}), 400, "nope")
    error(api.post(trigger.format("read"), json={"items": [1]}), 400, "producer")
    error(api.post(trigger.format("double"), json={"args": {"n": 1}}), 400, "processor")
    error(api.post(trigger.format("double"), json={"items": []}), 400, "non-empty")
    error(api.post(trigger.format("read"), json={"args": {}, "extra": 1}), 400, "'extra'")
    error(api.post(trigger.format("read"), content=b"{not json", headers=JSON), 400, "JSON")
    error(api.post(trigger.format("nowhere")), 404, "nowhere")
    error(api.post("/pipelines/ghost/stages/read/trigger"), 404, "ghost")
    error(api.post(trigger.format("read") + "?wait=true&timeout=301"), 400, "timeout")


def test_full_queue_with_reject_is_429(api: httpx.Client) -> None:
    r = api.post("/pipelines/tight/stages/gate/trigger", json={"items": list(range(10))})
    error(r, 429)


def test_dead_letters_of_a_failing_stage(api: httpx.Client, api_daemon: DaemonProcess) -> None:
    r = api.post("/pipelines/failing/stages/src/trigger?wait=true&timeout=20", json={"args": {"n": 2}})
    assert r.status_code == 200 and r.json()["state"] == "failed", r.text
    letters = api.get("/pipelines/failing/dead-letters?limit=1").json()
    assert len(letters) == 1
    assert letters[0]["stage"] == "boom" and "ValueError" in letters[0]["error"]
    assert set(letters[0]) == {"id", "run", "stage", "at", "attempts", "error", "traceback", "item", "truncated"}
    assert "ValueError" in letters[0]["traceback"] and letters[0]["truncated"] is False
    assert len(api.get("/pipelines/failing/dead-letters").json()) >= 2
    error(api.get("/pipelines/failing/dead-letters?limit=0"), 400, "limit")


def test_stats_and_metrics(api: httpx.Client) -> None:
    api.post("/pipelines/orders/stages/read/trigger?wait=true", json={"args": {"n": 5}})
    stats = api.get("/pipelines/orders/stats").json()
    assert stats["pipeline"] == "orders" and stats["stages"]["double"]["items_in"] >= 5
    daemon = api.get("/stats").json()
    assert daemon["daemon"]["pipelines"] == 3 and "orders" in daemon["pipelines"]
    r = api.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    doubled = [s for s in families["pipelined_stage_items"].samples
               if s.labels == {"pipeline": "orders", "stage": "double", "outcome": "in"}]  # fmt: skip
    assert doubled and doubled[0].value >= 5
    assert any(s.labels["pipeline"] == "orders" for s in families["pipelined_stage_queue_depth"].samples)
    assert "pipelined_reloads" in families and "pipelined_runs" in families


def test_graph_formats(api: httpx.Client) -> None:
    graph = api.get("/pipelines/orders/graph").json()
    assert {n["id"] for n in graph["nodes"]} == {"read", "double", "store"}
    assert {"from": "read", "to": "double", "route": "direct"} in graph["edges"]
    mermaid = api.get("/pipelines/orders/graph?format=mermaid")
    assert mermaid.headers["content-type"].startswith("text/plain") and "flowchart LR" in mermaid.text
    dot = api.get("/pipelines/orders/graph?format=dot")
    assert dot.headers["content-type"].startswith("text/vnd.graphviz") and "digraph" in dot.text
    error(api.get("/pipelines/orders/graph?format=png"), 400, "format")


def test_drain_then_start(api: httpx.Client) -> None:
    r = api.post("/pipelines/orders/drain?wait=true&timeout=20")
    assert r.status_code == 200 and r.json()["state"] == "drained", r.text
    error(api.post("/pipelines/orders/drain"), 409, "orders")
    error(api.post("/pipelines/orders/stages/read/trigger"), 409, "orders")
    assert api.post("/pipelines/orders/start").json() == {"state": "running"}
    error(api.post("/pipelines/orders/start"), 409)
    assert api.post("/pipelines/orders/stages/read/trigger?wait=true").json()["state"] == "completed"


def test_reload_reports_every_list(api: httpx.Client) -> None:
    result = api.post("/reload").json()
    assert set(result) == {"added", "updated", "removed", "unchanged", "failed"}
    assert set(result["unchanged"]) >= {"orders", "failing", "tight"}


def test_config_writes(api: httpx.Client, api_daemon: DaemonProcess) -> None:
    path: Path = api_daemon.conf_dir / "written.toml"
    headers = {"content-type": "application/toml"}
    created = api.put("/pipelines/written", content=ORDERS.encode(), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "written" and path.read_text() == ORDERS
    invalid = api.put("/pipelines/written", content=b'[[stage]]\nname = "x"\nkind = "producer"\ncall = "nope:nope"\nthreds = 2\n', headers=headers)  # fmt: skip
    body = error(invalid, 400)
    assert len(body["errors"]) >= 2 and path.read_text() == ORDERS
    as_json = {"description": "json", "stage": [{"name": "read", "kind": "producer", "call": "apistages:produce"},
                                                {"name": "store", "kind": "consumer", "call": "apistages:sink"}]}  # fmt: skip
    updated = api.put("/pipelines/written", json=as_json)
    assert updated.status_code == 200, updated.text
    assert 'description = "json"' in path.read_text()
    error(api.put("/pipelines/...", content=ORDERS.encode(), headers=headers), 400, "name")
    error(api.put("/pipelines/Bad.Name", content=ORDERS.encode(), headers=headers), 400, "name")
    deleted = api.delete("/pipelines/written")
    assert (deleted.status_code, deleted.json()) == (200, {"name": "written", "removed": True})
    assert not path.exists()
    error(api.get("/pipelines/written"), 404)


def test_unknown_routes_and_methods(api: httpx.Client) -> None:
    error(api.get("/nope"), 404, "/nope")
    error(api.delete("/stats"), 405)
    error(api.post("/pipelines/orders/stages/double/trigger", content=b"x" * (1024 * 1024 + 10), headers=JSON), 413)
    assert api.get("/health").status_code == 200
