"""Every error leaves the API as `{"status_code": int, "detail": "<human sentence>"}`.

One map from exception to response: the daemon's `RequestError`s answer with their `status`,
`ConfigInvalid` answers 400 listing every problem (also as an `errors` list), Litestar's own
errors (validation, unknown route, wrong method, body too large) get a sentence naming the
parameter, path or limit, and anything unexpected is logged with its traceback and answered
500 without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.types import ExceptionHandlersMap

from pipelined.api.responses import OrjsonResponse, json_response
from pipelined.errors import ConfigInvalid, RequestError

log = logging.getLogger("pipelined.api")

Handler = Callable[[Request[Any, Any, Any], Any], OrjsonResponse]


def error_body(status_code: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {"status_code": status_code, "detail": detail, **extra}


def error_response(status_code: int, detail: str, **extra: Any) -> OrjsonResponse:
    response = json_response(error_body(status_code, detail, **extra), status_code)
    if status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pipelined"'
    return response


def _request_error(request: Request[Any, Any, Any], exc: RequestError) -> OrjsonResponse:
    return error_response(exc.status, exc.detail)


def _config_invalid(request: Request[Any, Any, Any], exc: ConfigInvalid) -> OrjsonResponse:
    errors = [str(p) for p in exc.problems if p.severity == "error"] or [str(exc)]
    warnings = [str(p) for p in exc.problems if p.severity == "warning"]
    detail = f"invalid pipeline configuration ({len(errors)} error(s)): " + "; ".join(errors)
    return error_response(400, detail, errors=errors, warnings=warnings)


def _describe_validation(request: Request[Any, Any, Any], exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    parts: list[str] = []
    for entry in extra:
        if not isinstance(entry, Mapping):
            parts.append(str(entry))
            continue
        source = getattr(entry.get("source"), "value", entry.get("source"))
        key, message = entry.get("key"), entry.get("message", "invalid")
        if key and source in ("query", "path", "header", "cookie"):
            parts.append(f"{source} parameter {key!r}: {message}")
        elif key:
            parts.append(f"{key!r}: {message}")
        else:
            parts.append(str(message))
    where = f"{request.method} {request.url.path}"
    if not parts:
        return f"{where}: {exc.detail}"
    return f"{where}: " + "; ".join(parts)


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> OrjsonResponse:
    status = exc.status_code
    where = f"{request.method} {request.url.path}"
    if isinstance(exc, ValidationException):
        return error_response(400, _describe_validation(request, exc))
    if isinstance(exc, NotFoundException) and exc.detail in ("", "Not Found"):
        return error_response(404, f"no such endpoint: {where}")
    if isinstance(exc, MethodNotAllowedException):
        allowed = exc.headers.get("allow", "") if exc.headers else ""
        detail = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(405, detail + (f" (allowed: {allowed})" if allowed else ""))
    if status == 413:
        limit = request.app.state.get("max_body")
        size = f" of {limit} bytes" if limit else ""
        return error_response(413, f"request body is larger than the limit{size} (api.max_body)")
    if status >= 500:
        log.error("%s failed: %s", where, exc.detail)
    return error_response(status, f"{where}: {exc.detail}")


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> OrjsonResponse:
    log.exception("%s %s failed unexpectedly", request.method, request.url.path)
    detail = f"internal error while handling {request.method} {request.url.path}: {type(exc).__name__}"
    return error_response(500, detail)


def json_errors_only(response: Response[Any]) -> Response[Any]:
    """`after_request`: an error a handler returned as non-JSON (Litestar's HTML 404 page for an
    unknown path under /schema) becomes the usual JSON error."""
    media_type = str(getattr(response.media_type, "value", response.media_type) or "")
    status = response.status_code
    if status is not None and status >= 400 and "json" not in media_type:
        detail = "no such endpoint (the OpenAPI document is /schema/openapi.json)"
        return error_response(status, detail if status == 404 else "request failed")
    return response


def exception_handlers() -> ExceptionHandlersMap:
    return {
        RequestError: _request_error,
        ConfigInvalid: _config_invalid,
        HTTPException: _http_exception,
        Exception: _unexpected,
    }
