"""What the browser tests share: how Chromium is launched, and one page session's record."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from playwright.sync_api import Page, Request

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass
class UiSession:
    """One browser context on one daemon's page, with what it asked for."""

    page: Page
    origin: str
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def api_requests(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.url.split("?")[0] == self.origin + path]

    def foreign_requests(self) -> list[str]:
        return [r.url for r in self.requests if not r.url.startswith(self.origin + "/") and not r.url.startswith("data:")]
