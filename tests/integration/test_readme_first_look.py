"""The README's "A first look" runs as written against a daemon on the shipped conf.d/ (issue 16:
its `read` example must read a file under an allowed root, and its curl sends JSON)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT, DaemonProcess, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def first_look_commands() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## A first look") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "no bash block under 'A first look'"
    return match.group(1)


def test_the_first_look_works_as_written(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, extra_args=["--conf-dir", str(REPO_ROOT / "conf.d")])
    block = first_look_commands()
    assert "/etc/" not in block  # nothing outside the roots
    # the same commands, pointed at this test's daemon instead of a ./tools/run on port 8470
    block = block.replace("localhost:8470", daemon.listen)
    block = block.replace(".venv/bin/pipelined top", ".venv/bin/pipelined top --once")  # no terminal here
    client = f"{sys.executable} -m pipelined"
    block = block.replace(".venv/bin/pipelined check", f"{client} check")
    block = block.replace(".venv/bin/pipelined", f"{client} --api {daemon.url}")
    try:
        daemon.start(timeout=30)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=REPO_ROOT, env=daemon.environment(),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"run":"r-' in done.stdout and "status_code" not in done.stdout, done.stdout
        (newest, *_) = daemon.client.get("/pipelines/wordcount/runs").json()

        def ended() -> dict[str, object] | None:
            run = daemon.client.get(f"/pipelines/wordcount/runs/{newest['run']}").json()
            return run if run["state"] != "running" else None

        run = wait_for(ended, 20, what="the README's run ends")
        assert run["state"] == "completed" and run["items"]["produced"] > 10, run  # type: ignore[operator]
        assert re.search(r"checked (\d+) files: \1 valid", done.stdout), done.stdout
        assert daemon.stop() == 0
    finally:
        daemon.close()
