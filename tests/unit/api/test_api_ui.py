"""`/ui/` (the web page's files) and the offline `/schema` page, over the app with FakeControl.

The browser tests (tests/browser/) drive the page itself in Chromium against a real daemon;
these check what can be checked over plain HTTP: routes, content types, auth exemptions, caching,
that every shipped file is package data, and that nothing refers to another host.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from fake_control import TOKEN
from litestar.testing import TestClient

from pipelined.api.schema_page import render_schema_page
from pipelined.api.ui import ASSETS, CONTENT_SECURITY_POLICY

REPO = Path(__file__).resolve().parents[3]
ASSET_DIR = REPO / "daemon" / "pipelined" / "api" / "ui_assets"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# the one absolute URL allowed in the assets: the SVG namespace (an identifier, never fetched)
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}
URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)]*""")


def test_ui_redirects_to_the_slash_url(authed: TestClient[Any]) -> None:
    r = authed.get("/ui", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "ui/"


@pytest.mark.parametrize("name", ASSETS)
def test_every_asset_is_served_without_a_token_with_its_type(authed: TestClient[Any], name: str) -> None:
    r = authed.get("/ui/" if name == "index.html" else f"/ui/{name}")
    assert r.status_code == 200, r.text
    media = MEDIA_TYPES[Path(name).suffix]
    assert r.headers["content-type"] == f"{media}; charset=utf-8"
    assert r.content == (ASSET_DIR / name).read_bytes()
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"


def test_the_api_still_needs_the_token_next_to_the_public_page(authed: TestClient[Any]) -> None:
    assert authed.get("/ui/").status_code == 200
    assert authed.get("/pipelines").status_code == 401
    assert authed.get("/stats").status_code == 401
    assert authed.get("/pipelines", headers=BEARER).status_code == 200


def test_unchanged_asset_answers_304(client: TestClient[Any]) -> None:
    first = client.get("/ui/app.js")
    again = client.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    other = client.get("/ui/app.js", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == first.content


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/..%2fpipelines", "/ui/%2e%2e", "/ui/app.js%00", "/ui/ui.py"])
def test_files_outside_the_allow_list_are_json_404s(authed: TestClient[Any], path: str) -> None:
    r = authed.get(path)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["status_code"] == 404


def test_the_asset_list_is_exactly_the_shipped_files_and_package_data_covers_them() -> None:
    on_disk = sorted(p.name for p in ASSET_DIR.iterdir() if p.is_file())
    assert on_disk == sorted(ASSETS)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["pipelined.api"]
    for name in ASSETS:
        assert any(fnmatch(f"ui_assets/{name}", pattern) for pattern in globs), name


@pytest.mark.parametrize("name", ASSETS)
def test_no_asset_refers_to_another_host_or_uses_inner_html(name: str) -> None:
    text = (ASSET_DIR / name).read_text()
    assert set(URL.findall(text)) <= ALLOWED_URLS, name
    assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text
    assert "document.write" not in text and "eval(" not in text


def test_index_loads_only_the_shipped_files_relatively() -> None:
    html = (ASSET_DIR / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    assert referenced == {"app.css", "app.js", "data:,"}
    imports = set()
    for name in ASSETS:
        if name.endswith(".js"):
            imports |= set(re.findall(r'from "\./([^"]+)"', (ASSET_DIR / name).read_text()))
    assert imports and imports <= set(ASSETS)


def test_schema_page_needs_no_other_host(authed: TestClient[Any]) -> None:
    r = authed.get("/schema", headers=BEARER)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script" not in page and "src=" not in page
    assert not re.findall(r"https?://", page)
    assert "/schema/openapi.json" in page and "/pipelines/{name}/stages/{stage}/trigger" in page
    assert authed.get("/schema/index.html", headers=BEARER).text == page
    assert authed.get("/schema/openapi.json", headers=BEARER).json()["openapi"].startswith("3.")


@pytest.mark.parametrize("old_ui", ["/schema/swagger", "/schema/redoc", "/schema/scalar", "/schema/elements"])
def test_cdn_backed_schema_uis_are_gone(client: TestClient[Any], old_ui: str) -> None:
    r = client.get(old_ui)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_schema_page_escapes_what_the_document_says() -> None:
    evil = "<script>alert(1)</script>"
    doc = {
        "info": {"title": evil, "version": "1", "description": evil},
        "paths": {
            "/x/{y}": {
                "get": {
                    "tags": [evil],
                    "summary": evil,
                    "parameters": [{"name": evil, "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": evil}},
                }
            }
        },
    }
    page = render_schema_page(doc, "/schema/openapi.json")
    assert "<script>" not in page and page.count("&lt;script&gt;") >= 6
