"""Bearer-token auth: every route except those marked `opt={"public": True}` (`/health`, `/ready`).

The OpenAPI document and its UI are protected too (they are endpoints like any other); fetch
them with the same `Authorization: Bearer <token>` header. Tokens are compared in constant
time with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

PUBLIC = {"public": True}


def token_matches(header: str | None, token: str) -> bool:
    """True when `header` is `Bearer <token>` (scheme case-insensitive), compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        hmac.compare_digest(b"", token.encode())  # same work whatever was sent
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer_token_guard(token: str) -> Guard:
    """A Litestar guard answering 401 unless the request carries the token."""

    def require_token(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        if not token_matches(connection.headers.get("authorization"), token):
            raise NotAuthorizedException(
                detail="missing or wrong bearer token: send 'Authorization: Bearer <token>'"
                " with the token from the file named by [api] token_file"
            )

    return require_token
