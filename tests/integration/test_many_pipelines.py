"""Hundreds of pipelines on one daemon: all start, and the daemon-wide thread budget that the
at-least-one rule cannot keep is warned about once (start time: tools/bench_start.py)."""

from __future__ import annotations

import pytest

from harness import DaemonProcess

PIPELINES = 300

SMALL = """
[[stage]]
name = "make"
kind = "producer"
call = "pipelined.stages:count"
args = {{ stop = {n} }}
auto_start = false

[[stage]]
name = "pause"
call = "pipelined.stages:sleep"
args = {{ seconds = 0 }}

[[stage]]
name = "out"
kind = "consumer"
call = "pipelined.stages:log"
args = {{ level = "debug" }}
"""


@pytest.mark.timeout(300)
def test_300_pipelines_start_and_the_exceeded_thread_budget_is_warned_once(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: DaemonProcess = make_daemon(settings="[daemon]\nmax_threads = 64\n")
    for i in range(PIPELINES):
        daemon.write_pipeline(f"p{i:03d}", SMALL.format(n=i % 5 + 1))
    daemon.start(timeout=240)
    listed = daemon.client.get("/pipelines").json()
    assert len(listed) == PIPELINES and {p["state"] for p in listed} == {"running"}
    stats = daemon.client.get("/stats").json()["daemon"]
    assert stats["pipelines"] == PIPELINES and stats["threads"] >= 3 * PIPELINES
    warned = [line for line in daemon.logs().splitlines() if "more than the daemon's max_threads = 64" in line]
    assert len(warned) == 1, warned
    assert "every stage gets at least one" in warned[0]
    # they run: one run of the last pipeline, through all three stages
    r = daemon.client.post(f"/pipelines/p{PIPELINES - 1:03d}/stages/make/trigger?wait=true")
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    assert r.json()["items"]["finished"] == (PIPELINES - 1) % 5 + 1
    assert daemon.stop(timeout=120) == 0
