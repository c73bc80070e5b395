"""The pure parts of the request checks: which Host names a listen address serves, what counts
as the API's own origin, and which requests carry a body that needs a Content-Type."""

from __future__ import annotations

import pytest
from litestar.datastructures import Headers

from pipelined.api.request_checks import check_content_type, check_origin, has_body, host_name, host_patterns
from pipelined.errors import Forbidden, UnsupportedMediaType


def test_host_patterns_of_a_tcp_address_are_names_without_ports() -> None:
    patterns = host_patterns("127.0.0.1:8470", ["pipelined.example", "*.ops.example", "proxy.example:443"])
    assert patterns == ["127.0.0.1", "localhost", "[::1]", "pipelined.example", "*.ops.example", "proxy.example"]
    assert host_patterns("[::1]:9000", []) == ["[::1]", "localhost", "127.0.0.1"]
    assert host_patterns("::1:9000", []) == ["[::1]", "localhost", "127.0.0.1"]  # brackets added
    assert host_patterns("unix:/run/pipelined/api.sock", ["x"]) is None  # no Host check on a socket


def test_host_name_drops_the_port() -> None:
    assert [host_name(h) for h in ("127.0.0.1:8470", "localhost", "[::1]:80", "[::1]", "a.b:x", "")] == [
        "127.0.0.1", "localhost", "[::1]", "[::1]", "a.b:x", "",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("origin", "scheme", "host"),
    [
        (None, "http", "127.0.0.1:8470"),
        ("http://127.0.0.1:8470", "http", "127.0.0.1:8470"),
        ("HTTP://LOCALHOST:8470", "http", "localhost:8470"),
        ("http://localhost", "http", "localhost:80"),  # default ports are the same origin
        ("https://pipelined.example", "https", "pipelined.example:443"),
        ("http://[::1]:8470", "http", "[::1]:8470"),
    ],
)
def test_the_apis_own_origin(origin: str | None, scheme: str, host: str) -> None:
    check_origin(origin, scheme, host)


@pytest.mark.parametrize(
    ("origin", "scheme", "host"),
    [
        ("https://evil.example", "http", "127.0.0.1:8470"),
        ("null", "http", "127.0.0.1:8470"),
        ("", "http", "127.0.0.1:8470"),
        ("http://127.0.0.1:8471", "http", "127.0.0.1:8470"),  # another port
        ("https://127.0.0.1:8470", "http", "127.0.0.1:8470"),  # another scheme
        ("http://127.0.0.1.evil.example:8470", "http", "127.0.0.1:8470"),
    ],
)
def test_another_origin_is_forbidden(origin: str, scheme: str, host: str) -> None:
    with pytest.raises(Forbidden, match="cross-origin request refused"):
        check_origin(origin, scheme, host)


def test_which_requests_have_a_body() -> None:
    assert not has_body(Headers({}))
    assert not has_body(Headers({"content-length": "0"}))
    assert has_body(Headers({"content-length": "2"}))
    assert has_body(Headers({"transfer-encoding": "chunked"}))
    assert has_body(Headers({"content-length": "x"}))  # malformed: treated as a body


def test_content_types() -> None:
    check_content_type("POST", Headers({}))  # no body: no Content-Type needed
    check_content_type("POST", Headers({"content-length": "2", "content-type": "Application/JSON; charset=utf-8"}))
    check_content_type("PUT", Headers({"content-length": "2", "content-type": "application/toml"}))
    with pytest.raises(UnsupportedMediaType, match="send it as application/json \\("):
        check_content_type("POST", Headers({"content-length": "2", "content-type": "application/toml"}))
    with pytest.raises(UnsupportedMediaType, match="no Content-Type"):
        check_content_type("DELETE", Headers({"transfer-encoding": "chunked"}))
