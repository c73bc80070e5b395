"""Browser tests of the /ui/ page: Playwright's sync API driving Debian's Chromium against a real
daemon (tests/harness.py). Never a downloaded browser: `apt-get install chromium` (tools/_setup.sh
does it for the test set-up) and point Playwright at it (`$CHROMIUM`, default /usr/bin/chromium).

Every test module here sets `pytestmark = pytest.mark.browser`; they run in its own pytest process (tools/test runs
`pytest -m "not browser"`, then `pytest -m browser`): the sync API runs an event loop of its own
that clashes with asyncio-based tests in the same process.

`open_ui` records every request the page makes and every uncaught script error; at teardown it
fails the test if the page asked any host but the daemon, or if a script threw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_session import CHROMIUM, LAUNCH_ARGS, UiSession
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from harness import DaemonProcess

expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (tools/test installs it), or set $CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_ui(browser: Browser) -> Iterator[Callable[..., UiSession]]:
    contexts: list[BrowserContext] = []
    sessions: list[UiSession] = []

    def open_page(daemon: DaemonProcess, pipeline: str | None = None) -> UiSession:
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        session = UiSession(page, daemon.url)
        page.on("request", lambda request: session.requests.append(request))
        page.on("pageerror", lambda error: session.errors.append(str(error)))
        sessions.append(session)
        page.goto(f"{daemon.url}/ui/" + (f"#{pipeline}" if pipeline else ""))
        return session

    yield open_page
    for context in contexts:
        context.close()
    for session in sessions:
        assert session.foreign_requests() == [], "the page asked another host"
        assert session.errors == [], "a script on the page threw"
