"""A disk buffer file whose pipeline file is gone (docs/operations.md, "Orphaned buffer files"):
the daemon says so at start (file, pipeline, items) and keeps it; the items resume when the
pipeline file comes back."""

from __future__ import annotations

from test_durable_daemon import consumed, held_pipeline, stop_with_three_items_stored

from harness import DaemonProcess


def test_a_buffer_file_without_its_pipeline_file_is_reported_at_start_and_kept(daemon: DaemonProcess) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    buffer_file = stop_with_three_items_stored(daemon)
    daemon.proc = None
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
