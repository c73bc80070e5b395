"""A real daemon (with a token) serves the web page's files publicly with their types, and an
offline /schema: plain HTTP, no browser (tests/browser/ drives the page itself)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from harness import DaemonProcess
from pipelined.api.ui import ASSETS

TOKEN = "ui-http-token"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def test_page_files_need_no_token_and_carry_their_types(make_daemon: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    daemon = make_daemon(settings=f'[api]\ntoken_file = "{token_file}"\n').start()
    with httpx.Client(base_url=daemon.url, timeout=10) as anonymous:
        redirect = anonymous.get("/ui")
        assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
        page = anonymous.get("/ui", follow_redirects=True)
        assert page.status_code == 200 and str(page.url) == f"{daemon.url}/ui/"
        for name in ASSETS:
            r = anonymous.get("/ui/" + ("" if name == "index.html" else name))
            assert r.status_code == 200, (name, r.text)
            assert r.headers["content-type"] == TYPES[Path(name).suffix], name
            assert "connect-src 'self'" in r.headers["content-security-policy"]
        assert anonymous.get("/stats").status_code == 401
        assert anonymous.get("/schema").status_code == 401  # the API's description stays behind the token
    schema = daemon.client.get("/schema", headers={"Authorization": f"Bearer {TOKEN}"})
    assert schema.status_code == 200 and schema.headers["content-type"].startswith("text/html")
    assert not re.findall(r"https?://|<script|\bsrc=", schema.text)
    assert "/schema/openapi.json" in schema.text
    doc = daemon.client.get("/schema/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "/pipelines/{name}/graph" in doc["paths"] and not any(p.startswith("/ui") for p in doc["paths"])
