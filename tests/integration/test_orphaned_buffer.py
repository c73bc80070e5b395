"""A disk buffer file whose pipeline file is gone (docs/operations.md, "Orphaned buffer files"):
the daemon says so at start (file, pipeline, items) and keeps it; the items resume when the
pipeline file comes back."""

from __future__ import annotations

from test_durable_daemon import MODULE, consumed, held_pipeline, trigger

from harness import DaemonProcess


def test_a_buffer_file_without_its_pipeline_file_is_reported_at_start_and_kept(daemon: DaemonProcess) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink, drain="200ms"))
    daemon.start()
    trigger(daemon, "held", "slow", {"items": [7, 8, 9]})
    assert daemon.stop() == 0  # a drain deadline: the three items stay stored
    daemon.proc = None
    buffer_file = daemon.state_dir / "buffers" / "held.sqlite3"
    daemon.remove_pipeline("held")  # while the daemon is stopped

    daemon.start()
    warning = f"disk buffer file {buffer_file} holds 3 items of pipeline 'held', which has no pipeline file"
    daemon.wait_log(warning)
    assert buffer_file.exists()

    gate.touch()  # the file comes back: its items resume, and it is no orphan any more
    daemon.write_pipeline("held", held_pipeline(gate, sink, drain="200ms"))
    assert daemon.client.post("/reload").status_code == 200
    daemon.wait_for(lambda: set(consumed(sink)) == {7, 8, 9}, what="the stored items consumed")
    assert daemon.logs().count(warning) == 1  # said once; not again once the file is back
