"""PUT / DELETE /pipelines/{name}: switched off by default, names checked, bodies validated."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from fake_control import FakeControl
from litestar.testing import TestClient

TOML = b'description = "new"\n[[stage]]\nname = "read"\nkind = "producer"\ncall = "m:f"\n'


def test_writes_are_403_unless_config_write(client: TestClient[Any], fake: FakeControl) -> None:
    r = client.put("/pipelines/new", content=TOML, headers={"content-type": "application/toml"})
    assert r.status_code == 403 and "config_write" in r.json()["detail"]
    d = client.delete("/pipelines/orders")
    assert d.status_code == 403 and "orders" in fake.pipelines


def test_put_creates_201_then_updates_200(writer: TestClient[Any], fake: FakeControl) -> None:
    headers = {"content-type": "application/toml"}
    created = writer.put("/pipelines/new", content=TOML, headers=headers)
    assert created.status_code == 201 and created.json()["name"] == "new"
    assert ("put_config", ("new", TOML.decode())) in fake.calls
    updated = writer.put("/pipelines/new", content=TOML, headers=headers)
    assert updated.status_code == 200


def test_put_json_is_written_as_toml(writer: TestClient[Any], fake: FakeControl) -> None:
    document = {"description": "j", "stage": [{"name": "read", "kind": "producer", "args": {"n": 3}}]}
    r = writer.put("/pipelines/fromjson", json=document)
    assert r.status_code == 201
    written = next(c[1][1] for c in fake.calls if c[0] == "put_config")
    assert tomllib.loads(written) == document


def test_put_invalid_config_lists_every_error(writer: TestClient[Any]) -> None:
    r = writer.put(
        "/pipelines/orders",
        content=b'description = "invalid"\n',
        headers={"content-type": "application/toml"},
    )
    assert r.status_code == 400
    body = r.json()
    assert len(body["errors"]) == 2
    assert "orders/read/call" in body["detail"] and "orders/read/threds" in body["detail"]
    assert body["errors"][0] == "orders.toml:3: orders/read/call: cannot import 'nope'"


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"", "application/toml", "empty"),
        (b"a = = 1", "application/toml", "not valid TOML"),
        (b"\xff\xfe", "application/toml", "not UTF-8"),
        (b"{", "application/json", "not valid JSON"),
        (b"[1]", "application/json", "JSON object"),
        (b'{"a": null}', "application/json", "cannot be written as TOML"),
        (b"a = " + b"[" * 5000 + b"]" * 5000, "application/toml", "nested too deeply"),
        (b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000, "application/toml", "nested too deeply"),
        (b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json", "not valid JSON"),
        (b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}", "application/json", "TOML: arrays or tables nested too deeply"),
    ],
)
def test_put_bad_bodies_are_400(
    writer: TestClient[Any], fake: FakeControl, body: bytes, content_type: str, words: str
) -> None:
    r = writer.put("/pipelines/orders", content=body, headers={"content-type": content_type})
    assert r.status_code == 400 and words in r.json()["detail"], r.text
    assert not any(c[0] == "put_config" for c in fake.calls)


@pytest.mark.parametrize("name", ["..", "Orders", "-x", "a" * 65, "a.b", "%2e%2e", "a%2Fb", "sp ace"])
def test_bad_names_are_400(writer: TestClient[Any], fake: FakeControl, name: str) -> None:
    r = writer.put(f"/pipelines/{name}", content=TOML, headers={"content-type": "application/toml"})
    assert r.status_code in (400, 404), r.text  # a raw "/" never reaches the handler: no route
    if r.status_code == 400:
        assert "invalid pipeline name" in r.json()["detail"]
    assert writer.delete(f"/pipelines/{name}").status_code in (400, 404)
    assert not any(c[0] == "put_config" for c in fake.calls)


def test_delete_removes(writer: TestClient[Any], fake: FakeControl) -> None:
    r = writer.delete("/pipelines/orders")
    assert r.status_code == 200 and "orders" not in fake.pipelines
    assert writer.delete("/pipelines/orders").status_code == 404


def test_body_over_max_body_is_413(make_client: Any) -> None:
    small = make_client(config_write=True, max_body=64)
    r = small.put("/pipelines/orders", content=b"#" * 65, headers={"content-type": "application/toml"})
    assert r.status_code == 413
    assert r.json() == {
        "status_code": 413,
        "detail": "request body is larger than the limit of 64 bytes (api.max_body)",
    }
    t = small.post(
        "/pipelines/orders/stages/enrich/trigger",
        content=b'{"items": [' + b"1," * 40 + b"1]}",
        headers={"content-type": "application/json"},
    )
    assert t.status_code == 413
