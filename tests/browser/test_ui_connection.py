"""The /ui/ page and its connection: the token prompt, the unreachable banner, and that it asks no
host but the daemon."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_session import UiSession
from playwright.sync_api import expect
from ui_pipelines import install

from harness import DaemonProcess

pytestmark = pytest.mark.browser

OpenUi = Callable[..., UiSession]
TOKEN = "s3cret-token-for-the-ui"


def token_settings(base: Path) -> str:
    base.mkdir(parents=True, exist_ok=True)
    token_file = base / "api.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return f'[api]\ntoken_file = "{token_file}"\n'


def test_token_prompt_sends_the_token_as_a_bearer_header(
    make_daemon: Callable[..., DaemonProcess], open_ui: OpenUi, tmp_path: Path
) -> None:
    daemon = install(make_daemon(settings=token_settings(tmp_path / "secret")), "orders").start()
    ui = open_ui(daemon)
    page = ui.page
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#conn-text")).to_have_text("token needed")
    assert page.locator("#pipelines li").count() == 0

    page.locator("#token-input").fill("wrong-token")
    page.locator("#token-submit").click()
    expect(page.locator("#token-why")).to_contain_text("refused")
    expect(dialog).to_be_visible()

    page.locator("#token-input").fill(TOKEN)
    page.locator("#token-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.locator('#pipelines li[data-pipeline="orders"]')).to_be_visible()
    expect(page.locator("#conn-text")).to_contain_text("live")

    api_calls = [r for r in ui.requests if "/ui/" not in r.url]
    assert api_calls, "the page made no API call"
    for request in ui.requests:
        assert TOKEN not in request.url
    answered = [r for r in api_calls if r.headers.get("authorization") == f"Bearer {TOKEN}"]
    assert any(r.url.endswith("/stats") for r in answered)
    assert all(r.headers.get("authorization") for r in api_calls[-4:])

    # the token stays for this tab (sessionStorage): a reload asks no more
    page.reload()
    expect(page.locator('#pipelines li[data-pipeline="orders"]')).to_be_visible()
    expect(dialog).to_be_hidden()
    # actions carry it too
    page.locator("#trigger-body").fill('{"stop": 1}')
    with page.expect_request(re.compile(r"/trigger$")) as sent:
        page.locator("#btn-trigger").click()
    assert sent.value.headers["authorization"] == f"Bearer {TOKEN}"
    expect(page.locator("#answer .status")).to_have_text("202")

    page.locator("#btn-forget").click()
    expect(dialog).to_be_visible()


def test_banner_appears_when_the_daemon_stops_and_goes_when_it_is_back(
    make_daemon: Callable[..., DaemonProcess], open_ui: OpenUi
) -> None:
    first = install(make_daemon(), "flow").start()
    ui = open_ui(first, "flow")
    page = ui.page
    banner = page.locator("#banner")
    expect(page.locator("#p-state")).to_have_text("running")
    expect(banner).to_be_hidden()

    assert first.stop() == 0
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("unreachable")
    expect(page.locator("#conn-text")).to_contain_text("unreachable")
    expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
    graph_before = page.locator("#graph").bounding_box()

    second = install(make_daemon(listen=first.listen), "flow").start()
    expect(banner).to_be_hidden()
    expect(page.locator("#conn-text")).to_contain_text("live")
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator("#d-pid")).to_have_text(str(second.pid))
    # a daemon that is still starting may list no pipeline yet: wait until the graph is drawn again
    expect(page.locator('#graph g.node[data-stage="sink"] .n-queue')).to_have_text(re.compile(r"^queue"))
    assert page.locator("#graph").bounding_box() == graph_before  # the banner overlays, moves nothing


def test_page_asks_no_host_but_the_daemon(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "flow", "orders", "fragile").start()
    ui = open_ui(daemon)
    page = ui.page
    for name in ("orders", "fragile", "flow"):
        page.locator(f'#pipelines li[data-pipeline="{name}"]').click()
        expect(page.locator("#p-name")).to_have_text(name)
        expect(page.locator("#graph g.node").first).to_be_visible()
    page.locator("#btn-reload").click()
    expect(page.locator("#answer .status")).to_have_text("200")
    urls = [r.url for r in ui.requests]
    for asset in ("/ui/", "/ui/app.js", "/ui/app.css", "/ui/graph.js", "/stats", "/pipelines"):
        assert daemon.url + asset in urls, asset
    assert ui.foreign_requests() == []
    assert all(u.startswith(daemon.url + "/") for u in urls)
