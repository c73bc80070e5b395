"""`buffer = "disk"` through a real daemon, killed with real SIGKILLs (docs/durability.md).

Every test restarts the same daemon (same conf and state dirs, same port) after `kill -9` and
checks from files the consumer fsynced: every item consumed at least once, duplicates bounded
by what was in flight, runs ended as config.md says, nothing left in the buffer.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import DaemonProcess, wait_for

MODULE = textwrap.dedent(
    """
    import os, time

    def numbered(n=1000):
        yield from range(n)

    def tag(x, delay=0.0):
        if delay:
            time.sleep(delay)
        return x

    def work(x):
        return x

    def sink(batch, path):
        batch = batch if isinstance(batch, list) else [batch]
        with open(path, "a") as f:
            f.write("".join(f"{x}\\n" for x in batch))
            f.flush()
            os.fsync(f.fileno())

    def record_held(x, ctx, path, gate):
        with open(path, "a") as f:
            f.write(f"{x} {ctx.item_id} {ctx.attempt}\\n")
            f.flush()
            os.fsync(f.fileno())
        while not os.path.exists(gate):
            time.sleep(0.01)
        return x

    def hold(x, path):
        while not os.path.exists(path):   # items stay in flight until the test creates `path`
            time.sleep(0.01)
        return x
    """
)
ROW = 1024  # items per stored row at most (a producer's slice)


def kill_pipeline(sink: Path, sync: str, *, queue: int = 200_000, drain: str = "5s") -> str:
    return textwrap.dedent(
        f"""
        buffer = "disk"
        buffer_sync = "{sync}"
        drain_timeout = "{drain}"

        [[stage]]
        name = "src"
        kind = "producer"
        call = "durable_mods:numbered"
        auto_start = false

        [[stage]]
        name = "tag"
        call = "durable_mods:tag"
        queue_size = {queue}

        [[stage]]
        name = "work"
        call = "durable_mods:work"
        processes = 2

        [[stage]]
        name = "batch"
        kind = "accumulator"
        max_size = 100
        max_wait = "200ms"

        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "durable_mods:sink"
        args = {{ path = "{sink}" }}
        """
    )


def consumed(path: Path) -> Counter[int]:
    """Ids in the sink's file (a line cut by the kill is not counted: its batch is replayed)."""
    if not path.exists():
        return Counter()
    text = path.read_text()
    lines = text.split("\n")[:-1] if not text.endswith("\n") else text.split("\n")
    return Counter(int(line) for line in lines if line.strip().isdigit())


def lines(path: Path) -> int:
    """How many lines the sink wrote (a cheap progress measure: duplicates count too)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def restart(daemon: DaemonProcess) -> None:
    daemon.kill()
    daemon.proc = None
    daemon.start(timeout=60)


def run_record(daemon: DaemonProcess, pipeline: str, run_id: str) -> dict[str, Any]:
    response = daemon.client.get(f"/pipelines/{pipeline}/runs/{run_id}")
    assert response.status_code == 200, f"{response.text}\n--- daemon log ---\n{daemon.logs()[-3000:]}"
    return dict(response.json())


def buffer_stats(daemon: DaemonProcess, pipeline: str) -> dict[str, Any]:
    return dict(daemon.client.get(f"/pipelines/{pipeline}/stats").json()["buffer"])


def trigger(daemon: DaemonProcess, pipeline: str, stage: str, body: dict[str, Any]) -> str:
    response = daemon.client.post(f"/pipelines/{pipeline}/stages/{stage}/trigger", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["run"])


def kill_loop(daemon: DaemonProcess, sync: str, items: int, kills: int) -> None:
    sink = daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("kill", kill_pipeline(sink, sync))
    daemon.start(timeout=60)
    run_id = trigger(daemon, "kill", "src", {"args": {"n": items}})
    daemon.wait_for(lambda: run_record(daemon, "kill", run_id)["items"]["produced"] == items, timeout=30,
                    what="every item produced (stored)")  # fmt: skip
    thresholds = sorted(random.sample(range(items // 20, items * 19 // 20), kills))
    for threshold in thresholds:  # SIGKILL at moments spread over the run
        began = time.monotonic()
        daemon.wait_for(lambda t=threshold: lines(sink) >= t, timeout=60, interval=0.05,
                        what=f"{threshold} items consumed")  # fmt: skip
        waited = time.monotonic() - began
        restart(daemon)
        print(f"kill at {threshold}: waited {waited:.1f} s, restarted in {time.monotonic() - began - waited:.1f} s")
        run = run_record(daemon, "kill", run_id)
        assert run["recovered"] is True and run["items"]["produced"] == items
    daemon.wait_for(lambda: run_record(daemon, "kill", run_id)["state"] != "running", timeout=120,
                    what="the run ended")  # fmt: skip
    run = run_record(daemon, "kill", run_id)
    seen = consumed(sink)
    missing = set(range(items)) - set(seen)
    duplicates = sum(seen.values()) - len(seen)
    print(f"kill loop ({sync}): {items} items, {kills} SIGKILLs, {duplicates} duplicates")
    assert not missing, f"{len(missing)} items lost, e.g. {sorted(missing)[:10]}"
    # replayed after a kill: rows (<= 1024 items) that had started, batches in flight
    assert duplicates <= kills * (4 * ROW + 1000), duplicates
    assert run["state"] == "completed" and run["recovered"] is True, run
    assert run["items"]["produced"] == items and run["items"]["in_flight"] == 0
    assert run["items"]["finished"] >= items // 100  # a batch counts once
    daemon.wait_for(lambda: buffer_stats(daemon, "kill")["items"] == 0, what="an empty buffer")


@pytest.mark.timeout(300)  # ten restarts of a real daemon: 45-110 s here, depending on the load
def test_kill_loop_normal_sync_loses_nothing(daemon: DaemonProcess) -> None:
    kill_loop(daemon, "normal", 100_000, 10)


@pytest.mark.timeout(300)
def test_kill_loop_full_sync_loses_nothing(daemon: DaemonProcess) -> None:
    kill_loop(daemon, "full", 30_000, 4)  # the same loop, smaller: every commit is fsynced


def test_a_producer_killed_mid_run_is_not_rerun_and_its_run_fails_after_its_items(daemon: DaemonProcess) -> None:
    sink = daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("kill", kill_pipeline(sink, "normal", queue=500))  # the producer waits for room
    daemon.start()
    run_id = trigger(daemon, "kill", "src", {"args": {"n": 1_000_000}})
    daemon.wait_for(lambda: sum(consumed(sink).values()) >= 2000, what="items flowing")
    restart(daemon)
    run = run_record(daemon, "kill", run_id)
    produced = run["items"]["produced"]
    assert run["recovered"] is True and 2000 <= produced < 1_000_000
    daemon.wait_for(lambda: run_record(daemon, "kill", run_id)["state"] != "running", timeout=60)
    run = run_record(daemon, "kill", run_id)
    assert run["state"] == "failed" and run["error"] == f"interrupted by a restart after {produced} items"
    assert set(consumed(sink)) == set(range(produced))  # what it yielded before the kill, no more
    daemon.wait_for(lambda: buffer_stats(daemon, "kill")["items"] == 0)


def post_quietly(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, timeout=60)


def held_pipeline(gate: Path, sink: Path, drain: str = "300ms", extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        buffer = "disk"
        drain_timeout = "{drain}"

        [[stage]]
        name = "slow"
        call = "durable_mods:hold"
        args = {{ path = "{gate}" }}
        threads = 2
        {extra}
        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "durable_mods:sink"
        args = {{ path = "{sink}" }}
        """
    )


@pytest.mark.parametrize("moment", ["reload", "drain"])
def test_sigkill_during_a_reload_or_a_drain_loses_nothing(daemon: DaemonProcess, moment: str) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink, drain="30s"))
    daemon.start()
    run_id = trigger(daemon, "held", "slow", {"items": list(range(500))})
    if moment == "reload":  # a new version: the old one drains (for up to 30 s: the items are held)
        daemon.write_pipeline("held", held_pipeline(gate, sink, drain="30s", extra="max_retries = 4"))
        threading.Thread(target=post_quietly, args=(f"{daemon.url}/reload",), daemon=True).start()  # waits for the swap
    else:
        assert daemon.client.post("/pipelines/held/drain").status_code in (200, 202)
    daemon.wait_for(lambda: daemon.client.get("/pipelines/held").json()["state"] == "draining", what="draining")
    restart(daemon)  # SIGKILL in the middle of it
    gate.touch()
    daemon.wait_for(lambda: run_record(daemon, "held", run_id)["state"] != "running", timeout=30)
    assert run_record(daemon, "held", run_id)["state"] == "completed"
    assert set(consumed(sink)) == set(range(500))
    daemon.wait_for(lambda: buffer_stats(daemon, "held")["items"] == 0)


def test_a_reload_removing_a_stage_dead_letters_its_stored_items(daemon: DaemonProcess) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink))
    daemon.start()
    run_id = trigger(daemon, "held", "slow", {"items": ["a", "b", "c"]})
    without_slow = textwrap.dedent(
        f"""
        buffer = "disk"
        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "durable_mods:sink"
        args = {{ path = "{sink}" }}
        """
    )
    daemon.write_pipeline("held", without_slow)
    assert daemon.client.post("/reload").status_code == 200  # the old version's drain deadline: 300 ms
    gate.touch()
    daemon.wait_for(lambda: run_record(daemon, "held", run_id)["state"] != "running")
    run = run_record(daemon, "held", run_id)
    assert run["state"] == "failed" and run["items"]["dead_lettered"] == 3
    letters = daemon.client.get("/pipelines/held/dead-letters").json()
    assert sorted((d["item"], d["stage"], d["error"]) for d in letters) == [
        (x, "slow", "stage removed by reload") for x in ("a", "b", "c")]
    assert not consumed(sink)


def test_delete_dead_letters_what_is_stored_and_removes_the_file(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, settings="[api]\nconfig_write = true\n", token="durable-token")
    try:
        delete_stored(daemon)
    finally:
        daemon.close()


def delete_stored(daemon: DaemonProcess) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink))
    daemon.start()
    trigger(daemon, "held", "slow", {"items": [1, 2]})
    assert daemon.client.delete("/pipelines/held").status_code == 200
    assert not (daemon.state_dir / "buffers" / "held.sqlite3").exists()
    letters = (daemon.state_dir / "dead-letters" / "held.jsonl").read_text()
    assert letters.count('"error":"shutdown"') == 2
    gate.touch()


def test_a_corrupt_buffer_at_start_fails_only_its_pipeline(daemon: DaemonProcess) -> None:
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink))
    daemon.write_pipeline("other", held_pipeline(gate, daemon.base_dir / "other.txt"))
    buffers = daemon.state_dir / "buffers"
    buffers.mkdir()
    (buffers / "held.sqlite3").write_bytes(b"\x00not sqlite\x00" * 500)
    daemon.start(wait="health")
    wait_for(lambda: daemon.client.get("/pipelines/other").json()["state"] == "running")
    held = daemon.client.get("/pipelines/held").json()
    assert held["state"] == "failed"
    assert "not a buffer file" in str(held) and "held.sqlite3.corrupt-" in str(held)
    assert len(list(buffers.glob("held.sqlite3.corrupt-*"))) == 1
    trigger(daemon, "other", "slow", {"items": [1]})


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    where = tmp_path / "base" / "state" / "buffers"
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> Path:
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_refuses_triggers_then_recovers_without_loss(small_disk: Path, tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "base")
    try:
        gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
        gate.touch()
        daemon.write_module("durable_mods", MODULE)
        daemon.write_pipeline("held", held_pipeline(gate, sink))
        daemon.start()
        first = trigger(daemon, "held", "slow", {"items": list(range(100))})
        daemon.wait_for(lambda: run_record(daemon, "held", first)["state"] == "completed")
        filler = fill(small_disk)
        refused = None
        for _ in range(50):  # the first writes may still find a free page
            response = daemon.client.post("/pipelines/held/stages/slow/trigger", json={"items": ["x" * 50_000] * 20})
            if response.status_code == 503:
                refused = response
                break
        assert refused is not None and "disk buffer" in refused.text, refused
        error = daemon.wait_for(lambda: buffer_stats(daemon, "held")["error"], what="the error in stats")
        assert "full" in error
        metrics = daemon.client.get("/metrics").text
        assert 'pipelined_buffer_available{kind="disk",pipeline="held"} 0.0' in metrics
        filler.unlink()  # space returns
        daemon.wait_for(lambda: buffer_stats(daemon, "held")["error"] is None, timeout=20, what="recovered")
        again = trigger(daemon, "held", "slow", {"items": list(range(100, 200))})
        daemon.wait_for(lambda: run_record(daemon, "held", again)["state"] == "completed")
        assert set(range(200)) <= set(consumed(sink))
    finally:
        daemon.close()


def stop_with_three_items_stored(daemon: DaemonProcess) -> Path:
    """Pipeline `held` takes 7, 8, 9, which wait for `<base_dir>/gate`; the daemon stops (a drain
    deadline: the items stay stored). Its buffer file."""
    gate, sink = daemon.base_dir / "gate", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("held", held_pipeline(gate, sink, drain="200ms"))
    daemon.start()
    trigger(daemon, "held", "slow", {"items": [7, 8, 9]})
    assert daemon.stop() == 0
    return daemon.state_dir / "buffers" / "held.sqlite3"


def test_the_buffer_file_can_be_inspected_with_sqlite_once_stopped(daemon: DaemonProcess) -> None:
    conn = sqlite3.connect(stop_with_three_items_stored(daemon))  # docs/operations.md's queries
    try:
        assert conn.execute("SELECT run, stage, kind, count FROM entries").fetchall() == [("r-000001", "slow", "in", 3)]
    finally:
        conn.close()


def test_a_process_stage_sees_the_same_item_id_and_the_next_attempt_after_a_sigkill(daemon: DaemonProcess) -> None:
    """config.md, Durable buffer: an item being processed at the crash is processed again, with
    ctx.item_id stable across the replay and ctx.attempt counting it — in a `processes = N`
    stage too (its ctx is built in the worker)."""
    gate, seen, sink = daemon.base_dir / "gate", daemon.base_dir / "seen.txt", daemon.base_dir / "consumed.txt"
    daemon.write_module("durable_mods", MODULE)
    daemon.write_pipeline("proc", textwrap.dedent(
        f"""
        buffer = "disk"
        [[stage]]
        name = "rec"
        call = "durable_mods:record_held"
        processes = 1
        args = {{ path = "{seen}", gate = "{gate}" }}
        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "durable_mods:sink"
        args = {{ path = "{sink}" }}
        """
    ))  # fmt: skip
    daemon.start()
    run_id = trigger(daemon, "proc", "rec", {"items": [10, 11, 12]})
    daemon.wait_for(lambda: seen.exists() and seen.read_text().count("\n") >= 1, what="the first item called")
    restart(daemon)
    gate.touch()
    daemon.wait_for(lambda: run_record(daemon, "proc", run_id)["state"] != "running", timeout=30)
    assert run_record(daemon, "proc", run_id)["state"] == "completed", run_record(daemon, "proc", run_id)
    calls = [line.split() for line in seen.read_text().splitlines()]
    assert [x for x, _, _ in calls[:1]] == ["10"]  # called before the kill, with its first attempt
    assert calls[0][1:] == [f"{run_id}.1", "1"]
    after = {x: (item_id, attempt) for x, item_id, attempt in calls[1:]}  # the replay: a second attempt each
    assert after == {"10": (f"{run_id}.1", "2"), "11": (f"{run_id}.2", "2"), "12": (f"{run_id}.3", "2")}
    assert set(consumed(sink)) == {10, 11, 12}
