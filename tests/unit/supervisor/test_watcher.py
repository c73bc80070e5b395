"""The conf-dir watcher (pipelined.supervisor.watcher.ConfWatcher) on a real directory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from harness import wait_for
from pipelined.supervisor.watcher import ConfWatcher


def test_a_file_written_every_50ms_is_reloaded_while_the_writes_go_on(tmp_path: Path) -> None:
    """The quiet period has a maximum: a file that never stops changing still reloads (at the
    latest ~2 s after its first change), instead of waiting for writes that never stop."""
    changes: list[set[str]] = []
    changed = threading.Event()

    def on_change(paths: set[str]) -> None:
        if paths:
            changes.append(paths)
            changed.set()

    watcher = ConfWatcher(lambda: [tmp_path], on_change, quiet_ms=1000)  # above the writes' gaps on a busy machine
    watcher.start()
    try:
        wait_for(watcher.ready.is_set, what="watching")
        target = tmp_path / "busy.toml"
        deadline = time.monotonic() + 20  # far beyond the ~2 s the reload may take
        writes = 0
        while not changed.is_set() and time.monotonic() < deadline:
            target.write_text(f"# write {writes}\n")
            writes += 1
            changed.wait(0.05)
        still_writing = changed.is_set()
    finally:
        watcher.stop()
    assert still_writing, f"no reload during {writes} writes 50 ms apart"
    assert str(target) in changes[0]

