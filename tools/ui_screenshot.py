"""Take docs/img/ui.png: the /ui/ page on a daemon running the shipped conf.d.

    .venv/bin/python tools/ui_screenshot.py [--pipeline nested] [--out docs/img/ui.png]

Starts `pipelined run` on ./conf.d (state in a temporary dir, a free loopback port), triggers one
run so the runs table has more than the auto-started one, waits for the numbers to settle, and
screenshots the page in Debian's chromium through Playwright (`$CHROMIUM`, default
/usr/bin/chromium; never a downloaded browser).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}/ready not 200 after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="nested")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "ui.png")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds of running before the shot")
    options = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state:
        settings = Path(state) / "pipelined.toml"
        settings.write_text("")
        command = [sys.executable, "-m", "pipelined", "run", "--conf-dir", "conf.d", "--state-dir", state,
                   "--listen", f"127.0.0.1:{port}", "--config", str(settings), "--no-watch"]  # fmt: skip
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(url, proc)
            trigger = f"{url}/pipelines/nested/stages/analyse/trigger"
            httpx.post(trigger, json={"items": [2, 3, 4, 5, 6, 7]}, timeout=10).raise_for_status()
            time.sleep(options.settle)
            with sync_playwright() as playwright:
                chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
                browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
                page.goto(f"{url}/ui/#{options.pipeline}")
                expect(page.locator("#graph g.node").first).to_be_visible(timeout=20_000)
                expect(page.locator("#conn-text")).to_contain_text("live")
                time.sleep(2.5)  # a couple of refreshes: rates computed over a few samples
                options.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(options.out), full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
