"""A disk buffer file whose pipeline file is gone (docs/operations.md, "Orphaned buffer files"):
the daemon says so at start (file, pipeline, items) and keeps it; the items resume when the
pipeline file comes back."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness import DaemonProcess

MODULE = textwrap.dedent(
    """
    import os, time

    def hold(x, path):
        while not os.path.exists(path):   # items stay in flight until the test creates `path`
            time.sleep(0.01)
        return x

    def sink(x, path):
        with open(path, "a") as f:
            f.write(f"{x}\\n")
    """
)


def held_pipeline(gate: Path, sink: Path) -> str:
    return textwrap.dedent(
        f"""
        buffer = "disk"
        drain_timeout = "200ms"

        [[stage]]
        name = "slow"
        call = "orphan_mods:hold"
        args = {{ path = "{gate}" }}

        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "orphan_mods:sink"
        args = {{ path = "{sink}" }}
        """
    )


def test_a_buffer_file_without_its_pipeline_file_is_reported_at_start_and_kept(daemon: DaemonProcess) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("orphan_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink))
    daemon.start()
    response = daemon.client.post("/pipelines/held/stages/slow/trigger", json={"items": [7, 8, 9]})
    assert response.status_code == 202, response.text
    assert daemon.stop() == 0  # a drain deadline: the three items stay stored
    buffer_file = daemon.state_dir / "buffers" / "held.sqlite3"
    daemon.proc = None
    daemon.remove_pipeline("held")  # while the daemon is stopped

    daemon.start()
    warning = f"disk buffer file {buffer_file} holds 3 items of pipeline 'held', which has no pipeline file"
    daemon.wait_log(warning)
    assert buffer_file.exists()

    gate.touch()  # the file comes back: its items resume, and it is no orphan any more
    daemon.write_pipeline("held", held_pipeline(gate, sink))
    assert daemon.client.post("/reload").status_code == 200
    daemon.wait_for(lambda: sink.exists() and sorted(sink.read_text().split()) == ["7", "8", "9"],
                    what="the stored items consumed")  # fmt: skip
    assert daemon.logs().count(warning) == 1  # said once; not again once the file is back
