"""Error shapes for everything Litestar itself rejects, the bearer token, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from fake_control import TOKEN
from litestar.testing import TestClient

from pipelined.api.auth import token_matches

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def assert_error(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status_code"] == status and isinstance(body["detail"], str)
    assert "Traceback" not in response.text
    for word in words:
        assert word in body["detail"]


def test_unknown_route_and_wrong_method(client: TestClient[Any]) -> None:
    assert_error(client.get("/nope"), 404, "/nope")
    assert_error(client.delete("/health"), 405, "DELETE", "/health")
    assert_error(client.get("/pipelines/orders/stages/read/trigger"), 405, "GET")


def test_unexpected_exception_is_500_without_trace(client: TestClient[Any], fake: Any) -> None:
    def explode(name: str) -> Any:
        raise RuntimeError("secret internals")

    fake.stats = explode
    r = client.get("/pipelines/orders/stats")
    assert_error(r, 500, "RuntimeError")
    assert "secret internals" not in r.text


def test_no_token_configured_means_no_auth(client: TestClient[Any]) -> None:
    assert client.get("/pipelines").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": "Bearer "}],
)  # fmt: skip
def test_token_required_everywhere_but_probes(authed: TestClient[Any], headers: dict[str, str]) -> None:
    for method, path in [("get", "/pipelines"), ("get", "/stats"), ("get", "/metrics"), ("post", "/reload"),
                         ("post", "/pipelines/orders/stages/read/trigger"), ("get", "/schema/openapi.json")]:  # fmt: skip
        r = getattr(authed, method)(path, headers=headers)
        assert_error(r, 401, "Authorization: Bearer")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert authed.get("/health", headers=headers).status_code == 200
    assert authed.get("/ready", headers=headers).status_code == 200


def test_right_token_passes(authed: TestClient[Any]) -> None:
    assert authed.get("/pipelines", headers=BEARER).status_code == 200
    assert authed.get("/pipelines", headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200
    assert authed.get("/schema/openapi.json", headers=BEARER).status_code == 200


def test_token_matches() -> None:
    assert token_matches("Bearer abc", "abc")
    assert not token_matches("Bearer abcd", "abc")
    assert not token_matches(None, "abc")
    assert not token_matches("Bearer ☃", "abc")


def test_openapi_describes_every_endpoint_with_models(client: TestClient[Any]) -> None:
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    expected = {
        ("get", "/health"), ("get", "/ready"), ("get", "/pipelines"), ("get", "/pipelines/{name}"),
        ("put", "/pipelines/{name}"), ("delete", "/pipelines/{name}"),
        ("post", "/pipelines/{name}/stages/{stage}/trigger"), ("get", "/pipelines/{name}/runs"),
        ("get", "/pipelines/{name}/runs/{run}"), ("post", "/pipelines/{name}/drain"),
        ("post", "/pipelines/{name}/start"), ("get", "/pipelines/{name}/stats"), ("get", "/stats"),
        ("get", "/metrics"), ("get", "/pipelines/{name}/dead-letters"), ("get", "/pipelines/{name}/graph"),
        ("post", "/reload"),
    }  # fmt: skip
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert expected <= found
    trigger = doc["paths"]["/pipelines/{name}/stages/{stage}/trigger"]["post"]
    assert set(trigger["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {
        "args",
        "items",
        "priority",
    }
    assert {"200", "202", "400", "404", "409", "429", "503"} <= set(trigger["responses"])
    put = doc["paths"]["/pipelines/{name}"]["put"]
    assert set(put["requestBody"]["content"]) == {"application/toml", "application/json"}
    assert "Run" in doc["components"]["schemas"] and "PipelineStats" in doc["components"]["schemas"]
    assert client.get("/schema").status_code == 200


def test_unknown_schema_page_is_a_json_404(client: TestClient[Any]) -> None:
    assert_error(client.get("/schema/nothing-here"), 404, "/schema/openapi.json")


@pytest.mark.parametrize("path", ["/pipelines/%ff", "/pipelines/%00", "/pipelines/orders/runs/" + "x" * 5000])
def test_odd_paths_are_plain_404s(client: TestClient[Any], path: str) -> None:
    assert_error(client.get(path), 404)


def test_nesting_deeper_than_orjson_allows_is_400(writer: TestClient[Any]) -> None:
    def nested(depth: int) -> bytes:
        return b'{"items": [' + b"[" * depth + b"]" * depth + b"]}"

    json = {"content-type": "application/json"}
    url = "/pipelines/orders/stages/enrich/trigger"
    assert writer.post(url, content=nested(500), headers=json).status_code == 202
    assert_error(writer.post(url, content=nested(2000), headers=json), 400, "depth")
