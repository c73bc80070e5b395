"""The /ui/ page against what a real user and a real daemon throw at it: a link with a broken
`#` fragment, a token the browser cannot send in a header, and dead letters whose items are
megabytes (the page must not download them again every second when nothing changed)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_session import UiSession
from playwright.sync_api import Page, expect
from ui_pipelines import install

from harness import DaemonProcess

pytestmark = pytest.mark.browser

OpenUi = Callable[..., UiSession]
TOKEN = "s3cret-token-for-the-ui"


def until(page: Page, condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait on the page's clock: the sync API records requests only while Playwright runs."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not true after {timeout_s}s"
        page.wait_for_timeout(50)


def test_a_broken_fragment_in_the_link_still_shows_the_daemon(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "orders", "fragile").start()
    ui = open_ui(daemon, "%E0%A4%A")  # a truncated percent-escape: decodeURIComponent throws on it
    page = ui.page
    expect(page.locator("#conn-text")).to_contain_text("live")
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#p-name")).to_have_text("fragile")  # the first pipeline
    page.evaluate("window.location.hash = '%'")  # the hashchange listener: no uncaught error either
    page.locator('#pipelines li[data-pipeline="orders"]').click()
    expect(page.locator("#p-name")).to_have_text("orders")


def test_a_token_a_header_cannot_carry_is_refused_in_the_dialog(
    make_daemon: Callable[..., DaemonProcess], open_ui: OpenUi, tmp_path: Path
) -> None:
    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    daemon = install(make_daemon(settings=f'[api]\ntoken_file = "{token_file}"\n'), "orders").start()
    page = open_ui(daemon).page
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.locator("#token-input").fill("tok€n")  # U+20AC: fetch() refuses it in a header
    page.locator("#token-submit").click()
    expect(page.locator("#token-why")).to_contain_text("cannot be sent")
    expect(dialog).to_be_visible()
    expect(page.locator("#banner")).to_be_hidden()  # not "daemon unreachable": it is fine
    page.locator("#token-input").fill(TOKEN)
    page.locator("#token-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#conn-text")).to_contain_text("live")


def test_dead_letters_are_fetched_again_only_when_there_are_new_ones(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "fragile").start()
    big = {"blob": "x" * 1_000_000}
    r = daemon.client.post("/pipelines/fragile/stages/judge/trigger", json={"items": [big, 1]})
    assert r.status_code == 202, r.text
    daemon.wait_for(lambda: len(daemon.client.get("/pipelines/fragile/dead-letters").json()) == 2)
    ui = open_ui(daemon, "fragile")
    page = ui.page
    expect(page.locator("#dead-letters tbody tr")).to_have_count(2)
    seen = len(ui.api_requests("/stats"))
    until(page, lambda: len(ui.api_requests("/stats")) >= seen + 4, "four more refreshes")
    assert len(ui.api_requests("/pipelines/fragile/dead-letters")) <= 2, "dead letters fetched on every refresh"

    r = daemon.client.post("/pipelines/fragile/stages/judge/trigger", json={"items": ["new"]})
    assert r.status_code == 202, r.text
    expect(page.locator("#dead-letters tbody tr")).to_have_count(3)
    expect(page.locator("#dead-letters tbody tr").first).to_contain_text(re.compile(r"new"))


NOISY = """
max_retries = 3
retry_backoff = "1ms"

[[stage]]
name = "judge"
call = "ui_stages:reject"

[[stage]]
name = "drop"
kind = "consumer"
call = "pipelined.stages:log"
"""


def test_a_nodes_error_count_never_overlaps_its_queue(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    """Four-digit failures and three-digit dead letters (`1,200 err · 300 dead`) ran over the
    queue text on the node — on the node the operator looks at when things go wrong."""
    install(daemon, "orders")
    daemon.write_pipeline("noisy", NOISY)
    daemon.start()
    r = daemon.client.post("/pipelines/noisy/stages/judge/trigger", json={"items": list(range(300))})
    assert r.status_code == 202, r.text
    daemon.wait_for(lambda: daemon.client.get("/pipelines/noisy/stats").json()["stages"]["judge"]["items_dead_lettered"]
                    == 300, timeout=60)  # fmt: skip
    page = open_ui(daemon, "noisy").page
    node = page.locator('#graph g.node[data-stage="judge"]')
    expect(node.locator(".n-errors")).to_contain_text("dead")
    frame, queue, errors = (node.locator(s).bounding_box() for s in (".n-frame", ".n-queue", ".n-errors"))
    assert frame and queue and errors
    assert queue["x"] + queue["width"] <= errors["x"], (queue, errors, node.locator(".n-errors").text_content())
    assert errors["x"] + errors["width"] <= frame["x"] + frame["width"]
