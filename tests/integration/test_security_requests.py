"""Issue 16, findings 4 and 8: DNS rebinding (Host), CSRF (Origin, Content-Type), deep TOML bodies.

Reproduced first against the old daemon: `Host: rebind.evil.example` was accepted for GET, PUT
(201) and trigger, a text/plain POST with `Origin: https://evil.example` answered 202, and a
deeply nested TOML body answered 500 with a RecursionError traceback in the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import DaemonProcess

TOKEN = "requests-token"
JSON = {"Content-Type": "application/json"}
TOML = {"Content-Type": "application/toml"}
PIPELINE = """
[[stage]]
name = "read"
kind = "producer"
call = "pipelined.stages:count"
auto_start = false
args = { stop = 3 }

[[stage]]
name = "sink"
kind = "consumer"
call = "pipelined.stages:log"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("requests")
    settings = '[api]\nconfig_write = true\nallowed_hosts = ["pipelined.example", "*.ops.example"]\n'
    daemon = DaemonProcess(base, settings=settings, token=TOKEN)
    daemon.write_pipeline("p", PIPELINE)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def send(d: DaemonProcess, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {**d.auth_headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, d.url + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


# -- Host: DNS rebinding ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/pipelines", None),
        ("PUT", "/pipelines/evil", PIPELINE),
        ("POST", "/pipelines/p/stages/read/trigger", None),
        ("GET", "/schema/openapi.json", None),
    ],
)
def test_a_foreign_host_is_refused_before_anything_happens(
    served: DaemonProcess, method: str, path: str, body: str | None
) -> None:
    headers = {"Host": "rebind.evil.example", **(TOML if body else {})}
    r = send(served, method, path, headers=headers, content=body)
    assert r.status_code == 400, r.text
    assert r.json()["status_code"] == 400
    assert "Host 'rebind.evil.example' is not served here" in r.json()["detail"]
    assert "allowed_hosts" in r.json()["detail"]
    assert not (served.conf_dir / "evil.toml").exists()
    assert "Traceback" not in served.logs()


def test_the_listen_address_localhost_and_allowed_hosts_are_served(served: DaemonProcess) -> None:
    port = served.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "127.0.0.1:9999",
                 "pipelined.example", f"pipelined.example:{port}", f"a.ops.example:{port}"):  # fmt: skip
        r = send(served, "GET", "/pipelines", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
    for host in ("ops.example", "pipelined.example.evil", f"evil.example:{port}", "", "localhost.evil:80"):
        assert send(served, "GET", "/pipelines", headers={"Host": host}).status_code == 400, host


def test_health_and_ready_answer_probes_whatever_the_host(served: DaemonProcess) -> None:
    for path in ("/health", "/ready"):
        assert send(served, "GET", path, headers={"Host": "10.1.2.3:8470"}).status_code == 200


# -- Origin: CSRF ----------------------------------------------------------------------------------
def test_a_cross_site_text_plain_post_is_refused(served: DaemonProcess) -> None:
    before = len(served.client.get("/pipelines/p/runs").json())
    r = send(
        served, "POST", "/pipelines/p/stages/read/trigger",
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}, content='{"args": {}}',
    )  # fmt: skip
    assert r.status_code == 403, r.text
    assert "cross-origin request refused: Origin 'https://evil.example'" in r.json()["detail"]
    for method, path in (("POST", "/pipelines/p/drain"), ("POST", "/reload"), ("GET", "/pipelines")):
        assert send(served, method, path, headers={"Origin": "http://evil.example"}).status_code == 403
    assert send(served, "POST", "/pipelines/p/drain", headers={"Origin": "null"}).status_code == 403
    assert len(served.client.get("/pipelines/p/runs").json()) == before
    assert served.pipeline("p")["state"] == "running"


def test_the_apis_own_origin_is_served(served: DaemonProcess) -> None:
    for origin in (f"http://127.0.0.1:{served.port}", f"HTTP://127.0.0.1:{served.port}"):
        r = send(served, "POST", "/pipelines/p/stages/read/trigger", headers={"Origin": origin, **JSON},
                 json={"args": {}})  # fmt: skip
        assert r.status_code == 202, r.text
    other_port = send(
        served, "GET", "/pipelines", headers={"Origin": f"http://127.0.0.1:{served.port + 1}"}
    )
    assert other_port.status_code == 403


# -- Content-Type ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_that_is_not_json_is_415(served: DaemonProcess, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = send(served, "POST", "/pipelines/p/stages/read/trigger", headers=headers, content=b'{"args": {}}')
    assert r.status_code == 415, r.text
    assert "send it as application/json" in r.json()["detail"]
    assert "-H 'Content-Type: application/json'" in r.json()["detail"]


def test_json_with_a_charset_and_a_put_of_toml_are_accepted(served: DaemonProcess) -> None:
    r = send(served, "POST", "/pipelines/p/stages/read/trigger",
             headers={"Content-Type": "application/json; charset=utf-8"}, content=b'{"args": {}}')  # fmt: skip
    assert r.status_code == 202, r.text
    put = send(served, "PUT", "/pipelines/toml", headers=TOML, content=PIPELINE)
    assert put.status_code == 201, put.text
    plain = send(served, "PUT", "/pipelines/toml", headers={"Content-Type": "text/plain"}, content=PIPELINE)
    assert plain.status_code == 415 and "application/json or application/toml" in plain.json()["detail"]


def test_requests_without_a_body_need_no_content_type(served: DaemonProcess) -> None:
    trigger = send(served, "POST", "/pipelines/p/stages/read/trigger")
    assert trigger.status_code == 202, trigger.text
    assert send(served, "POST", "/reload").status_code == 200
    drained = send(served, "POST", "/pipelines/p/drain?wait=true")
    assert drained.status_code == 200, drained.text
    assert send(served, "POST", "/pipelines/p/start").status_code == 200


# -- deeply nested bodies --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"a = " + b"[" * 20000 + b"]" * 20000,
        b"a = " + b"{b = " * 5000 + b"1" + b"}" * 5000,
        b"[[stage]]\nname = \"x\"\nargs = { v = " + b"[" * 20000 + b"]" * 20000 + b" }\n",
    ],
)
def test_a_toml_body_nested_too_deeply_is_400_not_500(served: DaemonProcess, body: bytes) -> None:
    r = send(served, "PUT", "/pipelines/deep", headers=TOML, content=body)
    assert r.status_code == 400, r.text
    assert "nested too deeply" in r.json()["detail"]
    assert "RecursionError" not in served.logs() and "Traceback" not in served.logs()
    assert not (served.conf_dir / "deep.toml").exists()


def test_a_pipeline_file_nested_too_deeply_fails_to_load_and_nothing_else(
    served: DaemonProcess, tmp_path: Path
) -> None:
    served.write_pipeline("deepfile", "a = " + "[" * 20000 + "]" * 20000)
    assert send(served, "POST", "/reload").status_code == 200
    detail = served.pipeline("deepfile")
    assert detail["state"] == "failed" and "nested too deeply" in detail["error"], detail
    served.remove_pipeline("deepfile")
    assert send(served, "POST", "/reload").status_code == 200
    assert served.pipeline("p")["state"] == "running"
    assert "Traceback" not in served.logs()
