"""api.md, sentence by sentence, against a real daemon: regressions found by the API audit.

One daemon for the module (config writes on, so it listens on a unix socket of mode 0600 and
needs no token: auth has its own tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from harness import DaemonProcess, file_version

STAGES = """
def produce(n=3):
    yield from range(n)

def inc(x):
    return x + 1

def sink(x):
    pass

def _fails_once(x, dir, tag):
    import pathlib

    marker = pathlib.Path(dir) / f"{tag}-{x}"
    if not marker.exists():
        marker.touch()
        raise ValueError(f"first attempt of {x}")
    return x


def flaky(x, dir, tag):
    return _fails_once(x, dir, tag)


async def aflaky(x, dir, tag):
    return _fails_once(x, dir, tag)


class BadSetup:
    def setup(self):
        raise RuntimeError("no database")

    def __call__(self, x):
        return x
"""

FLOW = """
[[stage]]
name = "src"
kind = "producer"
call = "auditstages:produce"
auto_start = false

[[stage]]
name = "inc"
call = "auditstages:inc"

[[stage]]
name = "acc"
kind = "accumulator"
max_size = 2

[[stage]]
name = "sink"
kind = "consumer"
call = "auditstages:sink"
"""

# disabled: validated, never started
OFF = """
enabled = false
max_threads = 3

[[stage]]
name = "src"
kind = "producer"
call = "auditstages:produce"

[[stage]]
name = "inc"
call = "auditstages:inc"
threads = 4

[[stage]]
name = "acc"
kind = "accumulator"

[[stage]]
name = "sink"
kind = "consumer"
call = "auditstages:sink"
"""

# valid, but its start fails (setup raises): state "failed" with a version
NOSTART = """
[[stage]]
name = "src"
kind = "producer"
call = "auditstages:produce"

[[stage]]
name = "bad"
call = "auditstages:BadSetup"

[[stage]]
name = "sink"
kind = "consumer"
call = "auditstages:sink"
"""

# every item fails its first attempt at each stage (threads, processes, async), then succeeds
FLAKY = """
max_retries = 3
retry_backoff = "1ms"

[[stage]]
name = "src"
kind = "producer"
call = "auditstages:produce"
auto_start = false
args = {{ n = 4 }}

[[stage]]
name = "t"
call = "auditstages:flaky"
args = {{ dir = "{dir}", tag = "t" }}

[[stage]]
name = "p"
call = "auditstages:flaky"
processes = 1
args = {{ dir = "{dir}", tag = "p" }}

[[stage]]
name = "a"
call = "auditstages:aflaky"
args = {{ dir = "{dir}", tag = "a" }}

[[stage]]
name = "sink"
kind = "consumer"
call = "auditstages:sink"
"""

ISO_UTC_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture(scope="module")
def audit_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("audit")
    daemon = DaemonProcess(base, settings="[api]\nconfig_write = true\n", listen=f"unix:{base / 'api.sock'}")
    daemon.write_module("auditstages", STAGES)
    markers = daemon.base_dir / "markers"
    markers.mkdir()
    for name, text in (("flow", FLOW), ("off", OFF), ("nostart", NOSTART), ("flaky", FLAKY.format(dir=markers))):
        daemon.write_pipeline(name, text)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def api(audit_daemon: DaemonProcess) -> httpx.Client:
    return audit_daemon.client


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


@pytest.mark.parametrize("name", ["off", "nostart"])
def test_stage_rows_of_a_pipeline_that_is_not_running(api: httpx.Client, name: str) -> None:
    detail = ok(api.get(f"/pipelines/{name}"))
    assert detail["state"] == ("disabled" if name == "off" else "failed")
    graph_nodes = {n["id"]: n for n in ok(api.get(f"/pipelines/{name}/graph"))["nodes"]}
    for row in detail["stages"]:
        # auto_start is a producer's setting: false for every other kind (as for a running pipeline)
        assert row["auto_start"] is (row["kind"] == "producer"), row
        # effective counts: what the graph shows, not 0 for a stage that would run
        assert (row["threads"], row["processes"]) == (
            graph_nodes[row["name"]]["threads"],
            graph_nodes[row["name"]]["processes"],
        ), row
        if row["kind"] == "accumulator":  # built in: uses none of the budget
            assert (row["threads"], row["requested_threads"], row["requested_processes"]) == (0, 0, 0)
        else:
            assert row["threads"] >= 1
    if name == "off":
        inc = next(r for r in detail["stages"] if r["name"] == "inc")
        assert inc["requested_threads"] == 4 and inc["threads"] < 4  # cut by max_threads = 3


@pytest.mark.parametrize("name", ["off", "nostart"])
def test_stats_of_a_pipeline_that_is_not_running_have_every_stage(api: httpx.Client, name: str) -> None:
    running = ok(api.get("/pipelines/flow/stats"))["stages"]["inc"]
    stats = ok(api.get(f"/pipelines/{name}/stats"))
    assert stats["pipeline"] == name and stats["bottleneck"] is None
    assert set(stats["runs"]) == {"started", "completed", "failed", "cancelled", "active"}
    names = [s["name"] for s in ok(api.get(f"/pipelines/{name}"))["stages"]]
    assert list(stats["stages"]) == names
    for row in stats["stages"].values():
        assert set(row) == set(running)  # the same fields as a running stage's row
        assert row["queue_depth"] == 0 and row["busy"] == 0 and row["utilization"] == 0.0
        assert row["threads"] == 0 and row["processes"] == 0  # nothing runs
    assert stats["stages"]["src"]["queue_capacity"] == 0
    assert stats["stages"]["sink"]["queue_capacity"] == 1000


def test_times_are_iso_8601_utc_with_microseconds(api: httpx.Client) -> None:
    detail = ok(api.get("/pipelines/flow"))
    assert ISO_UTC_MICROS.match(detail["loaded_at"]), detail["loaded_at"]
    assert ISO_UTC_MICROS.match(detail["last_reload"]["at"]), detail["last_reload"]
    run = ok(api.post("/pipelines/flow/stages/src/trigger?wait=true&timeout=20"))
    assert run["state"] == "completed", run
    for key in ("started_at", "finished_at"):
        assert ISO_UTC_MICROS.match(run[key]), run


def test_timestamps_keep_microseconds_when_they_are_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelined.supervisor import slot as pipeline_slot

    class AtWholeSecond(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> AtWholeSecond:
            return cls(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC)

    monkeypatch.setattr(pipeline_slot, "datetime", AtWholeSecond)
    assert pipeline_slot.utc_now_iso() == "2026-01-02T03:04:05.000000+00:00"


def test_args_for_a_non_producer_names_its_kind(api: httpx.Client) -> None:
    r = api.post("/pipelines/flow/stages/acc/trigger", json={"args": {"n": 1}})
    body = ok(r, 400)
    assert body["status_code"] == 400
    assert "'acc' is an accumulator" in body["detail"], body


def test_utilization_covers_the_last_60_s_even_when_nobody_reads_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelined.engine import stats
    from pipelined.engine.counters import StageCounters

    clock = [1000.0]
    monkeypatch.setattr(stats, "_now", lambda: clock[0])
    counters = StageCounters()
    meter = stats.StageMeter(counters, "processor", workers=1, latency=False)
    assert meter in stats._SAMPLER._meters  # the daemon-wide sampler ticks it
    counters.add("items_in", 10)
    counters.add("busy_seconds", 10)  # 10 s inside the callable, then idle
    clock[0] += 10
    busy = meter.row(0, 10, 1, 0)
    assert busy["utilization"] > 0.9 and busy["throughput_per_s"] > 0
    for _ in range(16):  # the sampler's ticks over the next 80 s; nobody reads the stats
        clock[0] += stats.SAMPLE_EVERY_S
        meter.sample()
    idle = meter.row(0, 10, 1, 0)
    assert idle["utilization"] == 0.0 and idle["throughput_per_s"] == 0.0
    assert stats._SAMPLER._thread is not None and stats._SAMPLER._thread.is_alive()


def test_items_in_counts_each_item_once_whatever_its_retries(api: httpx.Client) -> None:
    # api.md's example: items_in 1000 = items_out 998 + 2 dead-lettered, with 7 retries besides
    run = ok(api.post("/pipelines/flaky/stages/src/trigger?wait=true&timeout=60"))
    assert run["state"] == "completed" and run["items"]["finished"] == 4, run
    rows = ok(api.get("/pipelines/flaky/stats"))["stages"]
    assert rows["src"]["items_in"] == 0 and rows["src"]["items_out"] == 4
    for stage in ("t", "p", "a"):  # threads, worker processes, async
        row = rows[stage]
        counts = (row["items_in"], row["items_out"], row["items_failed"], row["items_retried"])
        assert counts == (4, 4, 4, 4), (stage, row)
        assert row["items_dead_lettered"] == 0


GATED_START = """
import pathlib, time

GO = pathlib.Path({go!r})

class GatedSetup:
    def setup(self):  # the pipeline stays "starting" until the test lets it go (or 30 s)
        deadline = time.monotonic() + 30
        while not GO.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def __call__(self, x):
        return x

def sink(x):
    pass
"""


def test_every_pipeline_is_listed_as_starting_while_the_daemon_starts(daemon: DaemonProcess) -> None:
    # New pipelines start in parallel (supervisor/rescan.py, START_PARALLEL): each start is held
    # open by its stage's setup() until the test has looked, so what it sees does not depend on
    # which start a busy machine happens to finish first.
    go = daemon.base_dir / "go"
    daemon.write_module("gatedstart", GATED_START.format(go=str(go)))
    stages = '[[stage]]\nname = "s"\ncall = "gatedstart:GatedSetup"\n\n[[stage]]\nname = "o"\nkind = "consumer"\ncall = "gatedstart:sink"\n'
    daemon.write_pipeline("a", stages)
    b = daemon.write_pipeline("b", stages)
    daemon.start(wait="health")

    def listed() -> list[dict[str, Any]]:
        r = daemon.client.get("/pipelines")
        return list(r.json()) if r.status_code == 200 else []

    first = daemon.wait_for(listed, 10, what="GET /pipelines lists something")
    # both are listed from the start, as "starting", though neither has finished starting
    assert [p["name"] for p in first] == ["a", "b"], first
    row = first[1]
    assert (row["state"], row["version"], row["stages"], row["error"]) == ("starting", file_version(b), 2, None)
    assert first[0]["state"] == "starting", first
    assert daemon.client.get("/ready").status_code == 503
    go.touch()
    daemon.wait_for(lambda: daemon._endpoint_ok("/ready"), 20, what="ready")
    assert {p["name"]: p["state"] for p in listed()} == {"a": "running", "b": "running"}


STAGE_ROW_KEYS = {
    "kind", "items_in", "items_out", "items_failed", "items_retried", "items_dropped",
    "items_dead_lettered", "queue_depth", "queue_capacity", "threads", "processes", "busy",
    "utilization", "throughput_per_s", "throttled_s",
}  # fmt: skip


def test_exact_shapes_of_trigger_run_stats_and_daemon_stats(api: httpx.Client, audit_daemon: DaemonProcess) -> None:
    accepted = ok(api.post("/pipelines/flow/stages/src/trigger", json={"args": {"n": 3}}), 202)
    assert set(accepted) == {"run", "pipeline", "stage"} and accepted["stage"] == "src"
    run = ok(api.post("/pipelines/flow/stages/inc/trigger?wait=true&timeout=20", json={"items": [1, 2, 3]}))
    assert set(run) == {
        "run", "pipeline", "stage", "priority", "recovered", "state", "started_at", "finished_at", "items", "error",
        "parent",
    }
    assert run["recovered"] is False
    assert run["priority"] == 0
    assert run["parent"] is None  # api.md Additions: a linked run's names the sending run
    assert run["items"] == {"produced": 3, "in_flight": 0, "finished": 2, "filtered": 0, "dead_lettered": 0}
    assert ok(api.get("/pipelines/flow/runs"))[0]["run"] == run["run"]  # newest first
    stats = ok(api.get("/pipelines/flow/stats"))
    assert set(stats) == {"pipeline", "state", "version", "uptime_s", "runs", "bottleneck", "stages", "buffer"}
    assert stats["buffer"]["kind"] == "memory"
    for row in stats["stages"].values():
        assert set(row) == STAGE_ROW_KEYS  # no latency_ms without track_latency
    assert stats["stages"]["src"]["items_in"] == 0
    assert stats["stages"]["acc"]["items_out"] <= stats["stages"]["acc"]["items_in"] // 2 + 2  # batches once
    whole = ok(api.get("/stats"))
    assert set(whole) == {"daemon", "pipelines"}
    assert set(whole["daemon"]) == {"version", "uptime_s", "pid", "pipelines", "threads", "processes", "rss_bytes"}
    assert whole["daemon"]["pid"] == audit_daemon.pid and whole["daemon"]["pipelines"] == len(whole["pipelines"])
