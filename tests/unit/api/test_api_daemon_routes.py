"""/health, /ready, /stats, /metrics, /reload over FakeControl."""

from __future__ import annotations

from typing import Any

from fake_control import FakeControl
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families


def test_health_ok_then_503_when_stopping(client: TestClient[Any], fake: FakeControl) -> None:
    assert (client.get("/health").status_code, client.get("/health").json()) == (200, {"status": "ok"})
    fake.stopping = True
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "stopping" and r.json()["status_code"] == 503


def test_ready_states(client: TestClient[Any], fake: FakeControl) -> None:
    assert client.get("/ready").json() == {"status": "ready"}
    fake.ready = False
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "starting" and "starting" in r.json()["detail"]
    fake.stopping = True
    assert client.get("/ready").json()["status"] == "stopping"


def test_daemon_stats(client: TestClient[Any]) -> None:
    body = client.get("/stats").json()
    assert set(body["daemon"]) == {
        "version",
        "uptime_s",
        "pid",
        "pipelines",
        "threads",
        "processes",
        "rss_bytes",
    }
    assert list(body["pipelines"]) == ["orders"]


def test_reload_returns_the_result(client: TestClient[Any], fake: FakeControl) -> None:
    r = client.post("/reload")
    assert r.status_code == 200
    assert r.json()["updated"] == ["orders"] and "broken" in r.json()["failed"]


def test_metrics_parse_with_prometheus_parser(client: TestClient[Any]) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    items = {
        (s.labels["pipeline"], s.labels["stage"], s.labels["outcome"]): s.value
        for s in families["pipelined_stage_items"].samples
        if s.name.endswith("_total")
    }
    assert items[("orders", "enrich", "in")] == 10 and items[("orders", "enrich", "dead_lettered")] == 1
    assert {o for (_, _, o) in items} == {"in", "out", "failed", "retried", "dropped", "dead_lettered"}
    for name in (
        "pipelined_stage_queue_depth", "pipelined_stage_queue_capacity", "pipelined_stage_busy",
        "pipelined_stage_utilization", "pipelined_runs", "pipelined_dead_letters", "pipelined_reloads",
        "pipelined_pipeline_up", "pipelined_pipeline_state", "pipelined_daemon_rss_bytes",
    ):  # fmt: skip
        assert families[name].samples, name
    up = {s.labels["pipeline"]: s.value for s in families["pipelined_pipeline_up"].samples}
    assert up == {"broken": 0.0, "orders": 1.0}
    reloads = {(s.labels["pipeline"], s.labels["result"]): s.value for s in families["pipelined_reloads"].samples
               if s.name.endswith("_total")}  # fmt: skip
    assert reloads == {("orders", "ok"): 2.0, ("orders", "failed"): 1.0}
    latency = {s.labels["quantile"]: s.value for s in families["pipelined_stage_latency_seconds"].samples}
    assert latency["0.99"] == 0.003


def test_daemon_graph_formats_content_types_and_openapi(client: TestClient[Any], fake: FakeControl) -> None:
    body = client.get("/graph").json()
    assert body["links"] == [{"from": "orders/store", "to": "archive/keep"}]
    assert {"name": "orders", "state": "running"} in body["pipelines"]
    for fmt, media, start in (("mermaid", "text/plain", "flowchart LR"), ("dot", "text/vnd.graphviz", "digraph")):
        r = client.get(f"/graph?format={fmt}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media) and r.text.startswith(start)
    assert ("daemon_graph", ("dot",)) in fake.calls
    r = client.get("/graph?format=svg")
    assert r.status_code == 400 and "format" in r.json()["detail"]
    document = client.get("/schema/openapi.json").json()
    operation = document["paths"]["/graph"]["get"]
    [parameter] = operation["parameters"]
    assert parameter["name"] == "format" and parameter["schema"]["enum"] == ["json", "mermaid", "dot"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/DaemonGraphJson"}
    assert set(document["components"]["schemas"]["DaemonGraphJson"]["properties"]) == {"pipelines", "links"}
