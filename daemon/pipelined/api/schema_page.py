"""`/schema`: an OpenAPI page that works offline.

Litestar's own schema UIs (Scalar, Swagger, Redoc, …) load their scripts, styles and favicon
from CDNs. This plugin renders the OpenAPI document into one self-contained HTML page on the
server instead — every operation with its parameters, body and responses, and a link to the JSON
document (`/schema/openapi.json`, served by Litestar as before) — with no script and no
reference to any other host. Everything taken from the document is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

HTTP_METHODS = ("get", "post", "put", "patch", "delete")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:22px}h2{margin:28px 0 8px;font-size:17px;text-transform:capitalize}
code,.path{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
details{background:#fff;border:1px solid #d5dbe3;border-radius:6px;margin:6px 0}
summary{cursor:pointer;padding:8px 12px;display:flex;gap:12px;align-items:baseline}
.m{display:inline-block;min-width:58px;font-weight:700;font-size:12px;text-transform:uppercase}
.get{color:#1565c0}.post{color:#2e7d32}.put{color:#ef6c00}.delete{color:#c62828}.patch{color:#6a1b9a}
.sum{color:#55606e}.body{padding:0 14px 10px}table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e6eaf0;vertical-align:top}
th{font-size:12px;color:#55606e;font-weight:600}.note{color:#55606e}
"""


def _schema_name(schema: Any) -> str:
    """A short type description of a (possibly referenced) JSON schema."""
    if not isinstance(schema, dict):
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in schema or "anyOf" in schema:
        return " | ".join(_schema_name(s) for s in (schema.get("oneOf") or schema.get("anyOf") or []))
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_schema_name(schema.get('items', {})) or 'any'}"
    return str(kind or "object")


def _parameters(operation: dict[str, Any]) -> str:
    params = operation.get("parameters") or []
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(str(p.get('name', '')))}</code></td><td>{escape(str(p.get('in', '')))}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{escape(_schema_name(p.get('schema')))}</td>"
        f"<td>{escape(str(p.get('description', '')))}</td></tr>"
        for p in params
        if isinstance(p, dict)
    )
    return (
        "<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th><th>description</th></tr>"
        f"{rows}</table>"
    )


def _request_body(operation: dict[str, Any]) -> str:
    body = operation.get("requestBody")
    if not isinstance(body, dict):
        return ""
    kinds = ", ".join(
        f"<code>{escape(media)}</code> {escape(_schema_name(spec.get('schema')))}"
        for media, spec in (body.get("content") or {}).items()
        if isinstance(spec, dict)
    )
    return f"<p>Body: {kinds}</p>"


def _responses(operation: dict[str, Any]) -> str:
    responses = operation.get("responses") or {}
    rows = "".join(
        f"<tr><td><code>{escape(str(code))}</code></td><td>{escape(str(spec.get('description', '')))}</td>"
        f"<td>{escape(', '.join(_schema_name(c.get('schema')) for c in (spec.get('content') or {}).values()))}</td></tr>"
        for code, spec in sorted(responses.items())
        if isinstance(spec, dict)
    )
    return f"<table><tr><th>status</th><th>when</th><th>body</th></tr>{rows}</table>" if rows else ""


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    summary = escape(str(operation.get("summary") or operation.get("operationId") or ""))
    description = operation.get("description")
    text = f"<p>{escape(str(description))}</p>" if description else ""
    return (
        f'<details><summary><span class="m {method}">{method}</span><span class="path">{escape(path)}</span>'
        f'<span class="sum">{summary}</span></summary><div class="body">{text}'
        f"{_parameters(operation)}{_request_body(operation)}{_responses(operation)}</div></details>"
    )


def render_schema_page(openapi: dict[str, Any], json_url: str) -> str:
    """The whole page: operations grouped by their first tag, in document order."""
    info = openapi.get("info") or {}
    groups: dict[str, list[str]] = {}
    for path, item in (openapi.get("paths") or {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method) if isinstance(item, dict) else None
            if isinstance(operation, dict):
                tag = str((operation.get("tags") or ["other"])[0])
                groups.setdefault(tag, []).append(_operation(str(path), method, operation))
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in groups.items())
    title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} — API</title>'
        f'<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body><main>'
        f"<h1>{title}</h1><p>{escape(str(info.get('description', '')))}</p>"
        f'<p class="note">The machine-readable OpenAPI document: <a href="{escape(json_url)}">'
        f"{escape(json_url)}</a>. This page is rendered by the daemon and loads nothing from any "
        f"other host.</p>{sections}</main></body></html>"
    )


class OfflineSchemaPage(OpenAPIRenderPlugin):
    """Serves `render_schema_page` at `/schema` (and `/schema/index.html`)."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/index.html"], favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return render_schema_page(openapi_schema, self.get_openapi_json_route(request)).encode("utf-8")
