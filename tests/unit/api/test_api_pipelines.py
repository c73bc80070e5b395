"""/pipelines endpoints (list, detail, drain, start, stats, dead letters, graph), over FakeControl."""

from __future__ import annotations

from typing import Any

import pytest
from fake_control import FakeControl
from litestar.testing import TestClient


def test_list_is_sorted_with_summary_fields(client: TestClient[Any]) -> None:
    r = client.get("/pipelines")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert [p["name"] for p in r.json()] == ["broken", "orders"]
    assert set(r.json()[0]) == {"name", "state", "file", "version", "stages", "error"}


def test_detail_and_unknown_pipeline(client: TestClient[Any]) -> None:
    r = client.get("/pipelines/orders")
    assert r.status_code == 200
    assert [s["name"] for s in r.json()["stages"]] == ["read", "enrich", "store"]
    missing = client.get("/pipelines/ghost")
    assert missing.status_code == 404
    assert missing.json() == {"status_code": 404, "detail": "no pipeline named 'ghost'"}


def test_drain_then_drain_again_is_409_then_start(client: TestClient[Any]) -> None:
    r = client.post("/pipelines/orders/drain")
    assert (r.status_code, r.json()) == (202, {"state": "draining"})
    again = client.post("/pipelines/orders/drain")
    assert again.status_code == 409 and "drained" in again.json()["detail"]
    assert client.post("/pipelines/orders/start").json() == {"state": "running"}
    running = client.post("/pipelines/orders/start")
    assert running.status_code == 409 and "'orders'" in running.json()["detail"]


def test_drain_wait_answers_200_with_stats_when_drained(client: TestClient[Any], fake: FakeControl) -> None:
    r = client.post("/pipelines/orders/drain?wait=true&timeout=5")
    assert r.status_code == 200
    assert r.json()["pipeline"] == "orders" and r.json()["state"] == "drained"
    assert ("wait_drained", ("orders", 5.0)) in fake.calls


def test_drain_wait_default_timeout_is_the_pipelines_own(client: TestClient[Any], fake: FakeControl) -> None:
    fake.pipelines["orders"].slow_drain = True
    r = client.post("/pipelines/orders/drain?wait=true")
    assert r.status_code == 202 and r.json()["state"] == "draining"
    assert ("wait_drained", ("orders", None)) in fake.calls


def test_stats_shape(client: TestClient[Any]) -> None:
    body = client.get("/pipelines/orders/stats").json()
    assert body["bottleneck"] == "enrich"
    assert body["stages"]["enrich"]["latency_ms"] == {"p50": 0.4, "p90": 1.1, "p99": 3.0}
    assert client.get("/pipelines/ghost/stats").status_code == 404


def test_dead_letters_limit(client: TestClient[Any], fake: FakeControl) -> None:
    fake.pipelines["orders"].dead_letters = [
        {
            "id": f"d{i}",
            "run": "r-1",
            "stage": "enrich",
            "at": "x",
            "attempts": 4,
            "error": "E",
            "item": {"i": i},
        }
        for i in range(5)
    ]
    assert len(client.get("/pipelines/orders/dead-letters").json()) == 5
    assert ("dead_letters", ("orders", 100)) in fake.calls
    assert [d["id"] for d in client.get("/pipelines/orders/dead-letters?limit=2").json()] == ["d0", "d1"]
    for bad in ("0", "x", "-3"):
        r = client.get(f"/pipelines/orders/dead-letters?limit={bad}")
        assert r.status_code == 400 and "'limit'" in r.json()["detail"]


@pytest.mark.parametrize(
    ("query", "content_type", "starts"),
    [
        ("", "application/json", '{"nodes":'),
        ("?format=json", "application/json", '{"nodes":'),
        ("?format=mermaid", "text/plain; charset=utf-8", "flowchart LR"),
        ("?format=dot", "text/vnd.graphviz; charset=utf-8", "digraph"),
    ],
)
def test_graph_formats_and_content_types(
    client: TestClient[Any], query: str, content_type: str, starts: str
) -> None:
    r = client.get(f"/pipelines/orders/graph{query}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.text.startswith(starts)


def test_graph_unknown_format_is_400_naming_it(client: TestClient[Any]) -> None:
    r = client.get("/pipelines/orders/graph?format=svg")
    assert r.status_code == 400 and "'format'" in r.json()["detail"] and "svg" in r.json()["detail"]


def test_graph_json_edges_use_from(client: TestClient[Any]) -> None:
    edges = client.get("/pipelines/orders/graph").json()["edges"]
    assert edges[0] == {"from": "read", "to": "enrich", "route": "direct"}
