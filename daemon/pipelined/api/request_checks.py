"""Checks every request passes before any route handler: Host, Origin and Content-Type.

Whoever can use the API is an operator of every pipeline, so a web page must never be able to
use it through an operator's browser:

- **Host** (DNS rebinding): a page on `rebind.evil.example` whose name later resolves to
  127.0.0.1 sends `Host: rebind.evil.example`. Only the listen address, `localhost`,
  `127.0.0.1`, `[::1]` and `[api] allowed_hosts` (`*.example.com` for subdomains; any port) are
  accepted: anything else is 400. Litestar's allowed-hosts matching is used;
  the refusal is the API's usual JSON error. A unix socket is not checked (a browser cannot reach
  one, and its clients send any name), nor are `/health` and `/ready` (probes send addresses).
- **Origin** (CSRF): browsers send `Origin` with every cross-site POST. A request whose `Origin`
  is not this API's own (scheme, host and port of the request) is 403, whatever its method.
- **Content-Type**: a request with a body must say `application/json` (a `PUT` of a pipeline may
  also be `application/toml`); anything else is 415 (an HTML form or a `text/plain` fetch, which
  browsers send cross-site without asking, never reaches a handler). A request without a body
  (a trigger without arguments, drain, start, reload) needs no Content-Type.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.datastructures import Headers
from litestar.middleware.allowed_hosts import AllowedHostsMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from pipelined.errors import BadRequest, Forbidden, UnsupportedMediaType

ALWAYS_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")
UNCHECKED_HOST_PATHS = ("/health", "/ready")
JSON = "application/json"
TOML = "application/toml"
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_patterns(listen: str, allowed_hosts: Iterable[str]) -> list[str] | None:
    """Litestar allowed-hosts entries (names, without ports) for a TCP listen address; None for a
    unix socket (no check)."""
    if listen.startswith("unix:"):
        return None
    host = listen.rpartition(":")[0]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    names = [host, *ALWAYS_ALLOWED_HOSTS, *allowed_hosts]
    return list(dict.fromkeys(host_name(name).lower() for name in names))


def host_name(host: str) -> str:
    """A Host header without its port: `127.0.0.1:8470` → `127.0.0.1`, `[::1]:80` → `[::1]`.

    The port is not checked: a rebinding page cannot choose the name the browser sends, whatever
    the port (so an SSH tunnel on another local port still reaches the API).
    """
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


class HostCheck(AllowedHostsMiddleware):
    """Litestar's allowed-hosts middleware, answering with the API's JSON error (400)."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        super().__init__(app, AllowedHostsConfig(allowed_hosts=hosts, www_redirect=False))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        host = Headers.from_scope(scope).get("host") or ""
        pattern = self.allowed_hosts_regex
        if pattern is None or path in UNCHECKED_HOST_PATHS or pattern.fullmatch(host_name(host).lower()):
            await self.app(scope, receive, send)
            return
        raise BadRequest(
            f"Host {host!r} is not served here (DNS rebinding?): use the listen address, localhost,"
            " 127.0.0.1 or [::1], or add the name to [api] allowed_hosts"
        )


class OriginAndBodyCheck:
    """403 for another origin, 415 for a body that is not JSON (or TOML for a PUT)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers.from_scope(scope)
            check_origin(headers.get("origin"), str(scope.get("scheme", "http")), headers.get("host") or "")
            check_content_type(str(scope.get("method", "GET")), headers)
        await self.app(scope, receive, send)


def _endpoint(scheme: str, netloc: str) -> tuple[str, str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme.lower(), (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme.lower())


def check_origin(origin: str | None, scheme: str, host: str) -> None:
    """Forbidden unless `origin` is absent or this API's own origin."""
    if origin is None:
        return
    given = urlsplit(origin.strip())
    if given.scheme and given.netloc and _endpoint(given.scheme, given.netloc) == _endpoint(scheme, host):
        return
    raise Forbidden(
        f"cross-origin request refused: Origin {origin!r} is not this API's origin ({scheme}://{host});"
        " the API answers only its own pages and non-browser clients (CSRF protection)"
    )


def has_body(headers: Headers) -> bool:
    if "transfer-encoding" in headers:
        return True
    length = headers.get("content-length", "0").strip()
    return not length.isdigit() or int(length) > 0


def media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_content_type(method: str, headers: Headers) -> None:
    """UnsupportedMediaType unless a body comes as application/json (or application/toml for PUT)."""
    if not has_body(headers):
        return
    allowed = (JSON, TOML) if method == "PUT" else (JSON,)
    given = media_type(headers)
    if given in allowed:
        return
    names = " or ".join(allowed)
    sent = f"Content-Type {given!r}" if given else "no Content-Type"
    raise UnsupportedMediaType(
        f"request body sent with {sent}: send it as {names}"
        " (curl: -H 'Content-Type: application/json'; `curl -d` alone sends a form)"
    )
