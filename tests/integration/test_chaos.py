"""Chaos with a real daemon: stop while items flow, many edits of a busy pipeline, a file broken mid-flow.

Every item the producer yields and every item the sink consumes is recorded in files, so after the
daemon exited: produced == consumed + dead-lettered, nothing consumed twice.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import orjson
from daemon_pipelines import BROKEN, flow, install_flow_stages
from flow_stages import read_lines

from harness import DaemonProcess, file_version

EDITS = int(os.environ.get("PIPELINED_CHAOS_EDITS", "100"))  # ~3 s here


def _dead_lettered(daemon: DaemonProcess, pipeline: str) -> list[str]:
    path = daemon.state_dir / "dead-letters" / f"{pipeline}.jsonl"
    if not path.exists():
        return []
    return [str(orjson.loads(line)["item"]) for line in path.read_bytes().splitlines() if line.strip()]


def _assert_nothing_lost_or_duplicated(daemon: DaemonProcess, out: str, pipeline: str) -> tuple[int, int]:
    produced = read_lines(out, "produced.txt")
    consumed = read_lines(out, "consumed.txt")
    dead = _dead_lettered(daemon, pipeline)
    assert len(produced) == len(set(produced)), "a producer yielded an item twice"
    assert len(consumed) == len(set(consumed)), "an item was consumed twice"
    assert not set(consumed) & set(dead), "an item was both consumed and dead-lettered"
    assert set(produced) == set(consumed) | set(dead), (
        f"lost: {sorted(set(produced) - set(consumed) - set(dead))[:10]}"
    )
    return len(consumed), len(dead)


def test_sigterm_while_items_flow_loses_nothing(daemon: DaemonProcess) -> None:
    out = install_flow_stages(daemon)
    # slow work and a short drain_timeout: some items are still queued when the drain ends
    daemon.write_pipeline("busy", flow(out, delay=0.0005, work_seconds=0.02, drain_timeout="1s"))
    daemon.start()
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > 20, what="items flowing")
    assert daemon.stop() == 0
    consumed, dead = _assert_nothing_lost_or_duplicated(daemon, str(out), "busy")
    assert consumed > 20
    assert dead > 0  # the queue held ~10 s of work; the 1 s drain_timeout dead-lettered the rest
    letters = daemon.state_dir / "dead-letters" / "busy.jsonl"
    errors = {orjson.loads(line)["error"] for line in letters.read_bytes().splitlines()}
    assert errors == {"shutdown"}


def test_many_edits_of_a_busy_pipeline(daemon: DaemonProcess) -> None:
    out = install_flow_stages(daemon)
    steady_out = daemon.base_dir / "steady"
    steady_out.mkdir()
    daemon.write_pipeline("busy", flow(out, delay=0.001, work_seconds=0.001, description="edit 0"))
    steady = daemon.write_pipeline("steady", flow(steady_out, delay=0.002, description="steady"))
    daemon.start()
    steady_loaded = daemon.pipeline("steady")["loaded_at"]
    for i in range(1, EDITS + 1):
        path = daemon.write_pipeline("busy", flow(out, delay=0.001, work_seconds=0.001, description=f"edit {i}"))
        answer = daemon.client.post("/reload").json()
        assert answer["updated"] == ["busy"] and answer["failed"] == {}, answer
        daemon.wait_version("busy", file_version(path))
    steady_now = daemon.pipeline("steady")
    assert steady_now["loaded_at"] == steady_loaded and steady_now["version"] == file_version(steady)
    steady_stats = daemon.client.get("/pipelines/steady/stats").json()
    assert steady_stats["runs"]["cancelled"] == 0 and steady_stats["runs"]["started"] == 1
    busy_stats = daemon.client.get("/pipelines/busy/stats").json()
    assert busy_stats["runs"]["started"] == EDITS + 1  # counters survive reloads
    assert daemon.stop() == 0
    _assert_nothing_lost_or_duplicated(daemon, str(out), "busy")
    _assert_nothing_lost_or_duplicated(daemon, str(steady_out), "steady")


def test_file_made_invalid_mid_flow_keeps_the_old_version_going(daemon: DaemonProcess) -> None:
    out = install_flow_stages(daemon)
    good = file_version(daemon.write_pipeline("busy", flow(out, delay=0.001)))
    daemon.start()
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > 20, what="items flowing")
    daemon.write_pipeline("busy", BROKEN)
    assert "busy" in daemon.client.post("/reload").json()["failed"]
    seen = len(read_lines(str(out), "consumed.txt"))
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > seen + 50, what="old version still flowing")
    detail = daemon.pipeline("busy")
    assert detail["state"] == "running" and detail["version"] == good
    assert daemon.client.get("/pipelines/busy/stats").json()["runs"]["started"] == 1
    assert daemon.stop() == 0
    _assert_nothing_lost_or_duplicated(daemon, str(out), "busy")


def test_edits_at_random_pace_through_the_watcher(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(watch=True)
    out = install_flow_stages(daemon)
    daemon.write_pipeline("busy", flow(out, delay=0.001, work_seconds=0.001, description="edit 0"))
    daemon.start()
    pace = random.Random(5)
    for i in range(1, 31):
        daemon.write_pipeline("busy", flow(out, delay=0.001, work_seconds=0.001, description=f"edit {i}"),
                              atomic=pace.random() < 0.7)  # fmt: skip
        time.sleep(pace.choice((0.0, 0.05, 0.15, 0.3)))  # inside and outside the quiet period
    final = file_version(daemon.conf_dir / "busy.toml")
    daemon.wait_version("busy", final, timeout=10)
    assert daemon.pipeline("busy")["description"] == "edit 30"
    assert daemon.stop() == 0
    _assert_nothing_lost_or_duplicated(daemon, str(out), "busy")
