"""supervisor/orphans.py: which buffer files no pipeline file owns, read as a kill left them."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelined.engine.disk_buffer import DiskBuffer
from pipelined.supervisor.orphans import find_orphans


def test_buffer_files_without_a_pipeline_are_found_with_their_items_even_right_after_a_kill(tmp_path: Path) -> None:
    live, state = tmp_path / "live", tmp_path / "state"
    buffer = DiskBuffer.for_pipeline(live, "gone")
    try:
        buffer.begin_run("r-000001", "work", "inject", "2026-01-01T00:00:00+00:00")
        assert buffer.append("r-000001", "work", "in", 1, [1, 2, 3])[1].wait(10)
        (state / "buffers").mkdir(parents=True)
        for name in ("gone.sqlite3", "gone.sqlite3-wal"):  # what a kill -9 now leaves (a WAL)
            shutil.copy2(live / "buffers" / name, state / "buffers" / name)
    finally:
        buffer.close()
    DiskBuffer.for_pipeline(state, "empty").close()  # nothing stored: nothing to say
    DiskBuffer.for_pipeline(state, "kept").close()
    (state / "buffers" / "broken.sqlite3").write_bytes(b"not a database" * 100)
    orphans = find_orphans(state, {"kept"})
    assert [(o["pipeline"], o["items"], o["error"] is None) for o in orphans] == [
        ("broken", None, False),
        ("gone", 3, True),
    ]
    assert orphans[1]["file"] == str(state / "buffers" / "gone.sqlite3")
    assert (state / "buffers" / "gone.sqlite3").exists() and (state / "buffers" / "broken.sqlite3").exists()
    assert find_orphans(tmp_path / "nothing-here", set()) == []
