"""POST /pipelines/{name}/stages/{stage}/trigger and the runs endpoints, over FakeControl."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fake_control import FakeControl
from litestar.testing import TestClient

TRIGGER = "/pipelines/orders/stages/{stage}/trigger"


def trigger(client: TestClient[Any], stage: str = "read", query: str = "", **kwargs: Any) -> Any:
    return client.post(TRIGGER.format(stage=stage) + query, **kwargs)


def test_producer_trigger_without_body_answers_202_with_the_run(
    client: TestClient[Any], fake: FakeControl
) -> None:
    r = trigger(client)
    assert r.status_code == 202
    assert r.json() == {"run": "r-000001", "pipeline": "orders", "stage": "read"}
    assert ("trigger", ("orders", "read", None, None)) in fake.calls


def test_args_and_items_pass_through_without_coercion(client: TestClient[Any], fake: FakeControl) -> None:
    body = b'{"args": {"n": "5", "big": 123456789012345678901234567890, "f": 1.0, "x": null, "l": [true]}}'
    assert trigger(client, content=body, headers={"content-type": "application/json"}).status_code == 202
    args = fake.calls[-1][1][2]
    assert args == {"n": "5", "big": 123456789012345678901234567890, "f": 1.0, "x": None, "l": [True]}
    assert isinstance(args["big"], int) and isinstance(args["f"], float) and isinstance(args["n"], str)
    assert trigger(client, "enrich", json={"items": [1, "1", {"a": [1.5]}]}).status_code == 202
    assert fake.calls[-1][1][3] == [1, "1", {"a": [1.5]}]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"priority": 11}', "'priority' must be an integer from -10 to 10, not 11"),
        (b'{"priority": -11}', "not -11"),
        (b'{"args": {}, "priority": "5"}', "'priority' must be an integer from -10 to 10, not a string"),
        (b'{"priority": 1.5}', "not 1.5"),
        (b'{"priority": true}', "not a boolean"),
        (b'{"priority": null}', "not null"),
        (b'{"priority": 123456789012345678901234567890}', "'priority' must be an integer"),
    ],
)
def test_bad_priorities_answer_400_naming_the_field(
    client: TestClient[Any], fake: FakeControl, body: bytes, named: str
) -> None:
    r = trigger(client, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert named in r.json()["detail"]
    assert not any(c[0] == "trigger" for c in fake.calls)


def test_a_priority_reaches_the_control_and_the_run(client: TestClient[Any], fake: FakeControl) -> None:
    r = trigger(client, json={"args": {}, "priority": -10})
    assert r.status_code == 202, r.text
    assert fake.calls[-1] == ("trigger", ("orders", "read", {}, None, -10))
    assert trigger(client, "enrich", json={"items": [1], "priority": 10}).status_code == 202
    assert fake.calls[-1] == ("trigger", ("orders", "enrich", None, [1], 10))
    assert client.get("/pipelines/orders/runs/r-000002").json()["priority"] == 10


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"args": {}, "items": [1]}', "not both"),
        (b'{"argz": {}}', "'argz'"),
        (b'{"args": {}, "zzz": 1, "aaa": 2}', "'aaa', 'zzz'"),
        (b'{"args": [1]}', "'args' must be an object"),
        (b'{"items": []}', "'items' must be a non-empty list, not an empty list"),
        (b'{"items": {"a": 1}}', "'items' must be a non-empty list, not an object"),
        (b"[1, 2]", "JSON object"),
        (b'{"args": ', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"items": [NaN]}', "not valid JSON"),
    ],
)
def test_malformed_bodies_answer_400_naming_the_problem(
    client: TestClient[Any], body: bytes, named: str
) -> None:
    stage = "enrich" if b"items" in body else "read"
    r = trigger(client, stage, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["status_code"] == 400
    assert named in r.json()["detail"]


def test_wrong_body_for_the_stage_kind_is_400_naming_pipeline_and_stage(client: TestClient[Any]) -> None:
    r = trigger(client, "read", json={"items": [1]})
    assert r.status_code == 400 and "'read' is a producer" in r.json()["detail"]
    r = trigger(client, "store", json={"args": {"a": 1}})
    assert r.status_code == 400 and "'store' is a consumer" in r.json()["detail"]
    assert "'orders'" in r.json()["detail"]


def test_control_errors_map_to_their_status(client: TestClient[Any], fake: FakeControl) -> None:
    cases = [
        (trigger(client, json={"args": {"bad": 1}}), 400, "unexpected argument 'bad'"),
        (trigger(client, "nope"), 404, "no stage 'nope'"),
        (client.post("/pipelines/ghost/stages/read/trigger"), 404, "'ghost'"),
        (trigger(client, "enrich", json={"items": [1, 2, 3, 4]}), 429, "room for 3"),
        (trigger(client, "enrich", json={"items": ["block"]}), 503, "still full"),
        (client.post("/pipelines/broken/stages/read/trigger"), 409, "failed"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert response.json() == {"status_code": status, "detail": response.json()["detail"]}
        assert words in response.json()["detail"]


def test_wait_returns_200_with_the_finished_run(client: TestClient[Any], fake: FakeControl) -> None:
    r = trigger(client, query="?wait=true", json={"args": {"n": 1}})
    assert r.status_code == 200
    assert r.json()["state"] == "completed" and r.json()["run"] == "r-000001"
    assert ("wait_run", ("orders", "r-000001")) in fake.calls


def test_wait_timeout_answers_202_with_the_running_run(client: TestClient[Any], fake: FakeControl) -> None:
    r = trigger(client, query="?wait=true&timeout=0.05", json={"args": {"slow": True}})
    assert r.status_code == 202
    assert r.json()["state"] == "running" and r.json()["finished_at"] is None


def test_wait_returns_when_the_run_finishes_meanwhile(client: TestClient[Any], fake: FakeControl) -> None:
    answer: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: answer.update(
            r=trigger(client, query="?wait=1&timeout=10", json={"args": {"slow": True}})
        )
    )
    waiter.start()
    from harness import wait_for

    wait_for(lambda: any(c[0] == "wait_run" for c in fake.calls), timeout=5)
    fake.finish_run("r-000001")
    waiter.join(10)
    assert answer["r"].status_code == 200 and answer["r"].json()["state"] == "completed"


@pytest.mark.parametrize(
    "query",
    ["?wait=true&timeout=301", "?timeout=-1", "?timeout=abc", "?wait=maybe", "?timeout=nan", "?timeout=inf"],
)
def test_bad_wait_parameters_are_400_and_start_nothing(
    client: TestClient[Any], fake: FakeControl, query: str
) -> None:
    r = trigger(client, query=query)
    assert r.status_code == 400, r.text
    assert "timeout" in r.json()["detail"] or "wait" in r.json()["detail"]
    assert not any(c[0] == "trigger" for c in fake.calls)


def test_runs_list_and_one_run(client: TestClient[Any]) -> None:
    trigger(client)
    trigger(client)
    runs = client.get("/pipelines/orders/runs").json()
    assert [r["run"] for r in runs] == ["r-000002", "r-000001"]
    one = client.get("/pipelines/orders/runs/r-000001")
    assert one.status_code == 200
    assert set(one.json()) == {
        "run",
        "pipeline",
        "stage",
        "priority",
        "state",
        "started_at",
        "finished_at",
        "items",
        "error",
    }
    assert client.get("/pipelines/orders/runs/r-999").status_code == 404
    assert "'r-999'" in client.get("/pipelines/orders/runs/r-999").json()["detail"]
    assert client.get("/pipelines/ghost/runs").status_code == 404
