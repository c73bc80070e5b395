"""Bearer-token auth: every route except those marked `opt=PUBLIC` (`/health`, `/ready`).

The OpenAPI document and its UI are protected too (they are endpoints like any other); fetch
them with the same `Authorization: Bearer <token>` header. Tokens are compared in constant
time with `hmac.compare_digest`.

Public routes: a handler, controller or router created with `opt=PUBLIC` needs no token. The
web UI's static assets (`/ui/...`) are meant to be served that way (e.g.
`create_static_files_router("/ui", directories=[...], opt=PUBLIC)`): the page itself holds no
secret and asks the operator for the token, which it then sends on every API call.

The token lives in a `TokenHolder`: `POST /reload` and SIGHUP re-read its file (rotation without
a restart); a file that has become unreadable, empty or loose keeps the previous token.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from pipelined.errors import PipelinedError

PUBLIC = {"public": True}

log = logging.getLogger("pipelined.api")


class TokenHolder:
    """The current bearer token; `refresh()` re-reads it with `read` (None: no auth configured)."""

    def __init__(self, token: str | None, read: Callable[[], str | None] | None = None) -> None:
        self._token = token
        self._read = read
        self._lock = threading.Lock()

    @property
    def current(self) -> str | None:
        return self._token

    def refresh(self) -> bool:
        """Re-read the token; True when it changed. Errors are logged and keep the old token."""
        if self._read is None or self._token is None:
            return False
        try:
            token = self._read()
        except PipelinedError as exc:
            log.error("API token not re-read (the previous token stays valid): %s", exc)
            return False
        if token is None:
            log.error("API token not re-read: no token file any more (the previous token stays valid)")
            return False
        with self._lock:
            changed, self._token = token != self._token, token
        if changed:
            log.info("API token re-read: the new token is valid from now on, the old one no longer")
        return changed


def token_matches(header: str | None, token: str) -> bool:
    """True when `header` is `Bearer <token>` (scheme case-insensitive), compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        hmac.compare_digest(b"", token.encode())  # same work whatever was sent
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer_token_guard(tokens: TokenHolder) -> Guard:
    """A Litestar guard answering 401 unless the request carries the current token."""

    def require_token(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        token = tokens.current
        if token is None or not token_matches(connection.headers.get("authorization"), token):
            raise NotAuthorizedException(
                detail="missing or wrong bearer token: send 'Authorization: Bearer <token>'"
                " with the token from the file named by [api] token_file"
            )

    return require_token
