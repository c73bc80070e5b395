"""`/ui/`: the operator's web page, served from files shipped inside the package (`api/ui_assets/`).

The page and its assets are public (no token, like `/health`): they hold no data. The page asks
for the token itself and sends it as `Authorization: Bearer …` on every API call it makes, so
everything it shows is still behind the token. Assets are a fixed allow-list read with
`importlib.resources` (works from a wheel), sent with an ETag and `Cache-Control: no-cache` (an
upgraded daemon's page is picked up on the next load) and a Content-Security-Policy that lets
the page talk to the daemon only — no other host, no inline script.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath
from litestar.response import Redirect

from pipelined.api.auth import PUBLIC
from pipelined.errors import NotFound

AnyRequest = Request[Any, Any, Any]

_MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
}
ASSETS = ("index.html", "app.js", "api.js", "dom.js", "graph.js", "tables.js", "app.css")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def load_asset(name: str) -> Asset:
    """The asset's bytes from the installed package (raises 404 for names not shipped)."""
    if name not in ASSETS:
        raise NotFound(f"no such file in the web page's assets: {name!r} (see /ui/)")
    body = resources.files("pipelined.api").joinpath("ui_assets", name).read_bytes()
    suffix = name[name.rindex(".") :]
    return Asset(body, _MEDIA_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def _asset_response(request: AnyRequest, name: str) -> Response[bytes]:
    asset = load_asset(name)
    headers = {**_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(content=b"", status_code=304, headers=headers, media_type=asset.media_type)
    return Response(content=asset.body, status_code=200, headers=headers, media_type=asset.media_type)


@get("/ui", opt=PUBLIC, include_in_schema=False, name="ui-index")
async def ui_index(request: AnyRequest) -> Response[Any]:
    """`/ui/` → the page; `/ui` → a redirect to `/ui/` (the page loads its assets relatively)."""
    if not request.scope.get("raw_path", b"/").split(b"?", 1)[0].endswith(b"/"):
        return Redirect(path="ui/", status_code=308)
    return _asset_response(request, "index.html")


@get("/ui/{asset:str}", opt=PUBLIC, include_in_schema=False, name="ui-asset")
async def ui_asset(request: AnyRequest, asset: FromPath[str]) -> Response[bytes]:
    return _asset_response(request, asset)


ROUTES = [ui_index, ui_asset]
