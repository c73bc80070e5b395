"""rate_limit, concurrency and run priorities through a real daemon (config.md, Rate limits and
priorities; api.md `priority`, `throttled_s`).

One daemon (module scope) runs every pipeline of PIPELINES. Stage code writes what it did to
files in RATES_DIR with its own clock: one timestamp per call (rates), the start and end of each
call (caps), the run and item of each call in call order (priorities). Rates are judged from
those timestamps only: calls per second within ±10% of the limit once the bucket's first burst
is spent, and never more calls in any stretch of time than the bucket can give.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import DaemonProcess

STAGES = r'''
import asyncio, os, time

def _write(log, line):
    fd = os.open(os.path.join(os.environ["RATES_DIR"], log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

def stamp(x, log):
    _write(log, f"{time.time()!r}\n")

async def astamp(x, log):
    _write(log, f"{time.time()!r}\n")
    await asyncio.sleep(0)

def span(x, log, seconds=0.02):
    began = time.time()
    time.sleep(seconds)
    _write(log, f"{began!r} {time.time()!r}\n")

async def aspan(x, log, seconds=0.02):
    began = time.time()
    await asyncio.sleep(seconds)
    _write(log, f"{began!r} {time.time()!r}\n")

def ident(x):
    return x

def gen(n=3):
    yield from range(n)

class Recorder:
    """Writes `<run> <item> <time>` per call, in call order (one thread)."""
    def __init__(self, log, seconds=0.0002):
        self.log, self.seconds, self.fh = log, seconds, None
    def setup(self):
        self.fh = open(os.path.join(os.environ["RATES_DIR"], self.log), "a", buffering=1)
    def close(self):
        self.fh.close()
    def __call__(self, x, ctx):
        time.sleep(self.seconds)
        self.fh.write(f"{ctx.run} {x} {time.time()!r}\n")
'''

RATE = 10  # per second, in every rate_limit test
DRAIN_FAST = 'drain_timeout = "1s"\nmax_threads = 16\n'


def consumer(name: str, call: str, extra: str) -> str:
    return f'[[stage]]\nname = "{name}"\nkind = "consumer"\ncall = "ratestages:{call}"\n{extra}\n'


PIPELINES = {
    # rate_limit = 10/s over every worker of the stage
    "rl-threads": DRAIN_FAST + consumer("calls", "stamp", f'threads = 4\nrate_limit = "{RATE}/s"\nargs = {{ log = "rl-threads" }}'),
    "rl-processes": DRAIN_FAST + consumer("calls", "stamp", f'processes = 2\nrate_limit = "{RATE}/s"\nargs = {{ log = "rl-processes" }}'),
    "rl-async": DRAIN_FAST + consumer("calls", "astamp", f'threads = 4\nrate_limit = "{RATE}/s"\nargs = {{ log = "rl-async" }}'),
    # one token an hour: the second item waits for its token when the drain comes
    "wait-threads": DRAIN_FAST + consumer("calls", "stamp", 'threads = 2\nrate_limit = "1/h"\nargs = { log = "wait-threads" }'),
    "wait-processes": DRAIN_FAST + consumer("calls", "stamp", 'processes = 2\nrate_limit = "1/h"\nargs = { log = "wait-processes" }'),
    "wait-async": DRAIN_FAST + consumer("calls", "astamp", 'threads = 2\nrate_limit = "1/h"\nargs = { log = "wait-async" }'),
    # concurrency caps
    "cap-threads": DRAIN_FAST + consumer("calls", "span", 'threads = 8\nconcurrency = 2\nargs = { log = "cap-threads" }'),
    "cap-async": DRAIN_FAST + consumer("calls", "aspan", 'threads = 8\nconcurrency = 2\nargs = { log = "cap-async" }'),
    "cap-processes": DRAIN_FAST + consumer("calls", "span", 'processes = 2\nconcurrency = 1\nargs = { log = "cap-processes" }'),
    "cap-fork": DRAIN_FAST + consumer(
        "calls", "span", 'processes = 2\nprocess_mode = "fork_per_item"\nconcurrency = 1\nargs = { log = "cap-fork" }'
    ),
    # priorities: a backlog in the second stage's queue, and one old item among urgent ones
    "backlog": (
        "queue_size = 20000\n"
        '[[stage]]\nname = "pass"\ncall = "ratestages:ident"\n'
        + consumer("work", "Recorder", 'args = { log = "backlog" }')
    ),
    "aging": 'priority_max_wait = "1s"\n' + consumer("work", "Recorder", 'args = { log = "aging", seconds = 0.02 }'),
    "urgent-source": (
        '[[stage]]\nname = "src"\nkind = "producer"\ncall = "ratestages:gen"\nauto_start = false\npriority = 3\n'
        '[[stage]]\nname = "pass"\ncall = "ratestages:ident"\n'
        + consumer("out", "stamp", 'args = { log = "urgent-source" }')
    ),
}


@pytest.fixture(scope="module")
def rates_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("rates")
    out = base / "out"
    out.mkdir()
    daemon = DaemonProcess(base, env={"RATES_DIR": str(out)}, settings="[daemon]\nmax_processes = 16\n")
    daemon.write_module("ratestages", STAGES)
    for name, text in PIPELINES.items():
        daemon.write_pipeline(name, text)
    daemon.start(timeout=60)
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def api(rates_daemon: DaemonProcess) -> httpx.Client:
    return rates_daemon.client


def out_dir(daemon: DaemonProcess) -> Path:
    return Path(daemon.extra_env["RATES_DIR"])


def lines(daemon: DaemonProcess, log: str) -> list[str]:
    path = out_dir(daemon) / log
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.endswith(tuple("0123456789"))]


def inject(api: httpx.Client, pipeline: str, stage: str, items: list[Any], **body: Any) -> str:
    r = api.post(f"/pipelines/{pipeline}/stages/{stage}/trigger", json={"items": items, **body})
    assert r.status_code == 202, r.text
    return str(r.json()["run"])


def stage_stats(api: httpx.Client, pipeline: str, stage: str) -> dict[str, Any]:
    r = api.get(f"/pipelines/{pipeline}/stats")
    assert r.status_code == 200, r.text
    return dict(r.json()["stages"][stage])


def drain(daemon: DaemonProcess, pipeline: str) -> None:
    r = daemon.client.post(f"/pipelines/{pipeline}/drain")
    assert r.status_code == 202, r.text
    daemon.wait_state(pipeline, "drained", timeout=20)


# -- rate limits ---------------------------------------------------------------------------
def assert_within_the_bucket(stamps: list[float], count: int, per_s: float) -> None:
    """Token bucket conformance: any k consecutive calls spanning d seconds need k <= count +
    per_s * d tokens (+1 for the moment between a token's grant and the call's own clock)."""
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            calls, span = j - i + 1, stamps[j] - stamps[i]
            assert calls <= count + per_s * span + 1, (
                f"{calls} calls within {span:.3f} s: more than a bucket of {count} refilled at {per_s}/s gives"
            )


@pytest.mark.parametrize("pipeline", ["rl-threads", "rl-processes", "rl-async"])
def test_rate_limit_holds_across_every_worker_and_throttled_s_grows(
    rates_daemon: DaemonProcess, api: httpx.Client, pipeline: str
) -> None:
    run = inject(api, pipeline, "calls", list(range(200)))  # far more than 5 s of tokens
    first = rates_daemon.wait_for(lambda: lines(rates_daemon, pipeline), 30, what="first call")
    t0 = float(first[0])
    # the burst (RATE calls at once), then RATE per second: wait until 5 s after the first call
    rates_daemon.wait_for(lambda: float(lines(rates_daemon, pipeline)[-1]) >= t0 + 5.2, 30, what="5 s of calls")
    throttled = stage_stats(api, pipeline, "calls")["throttled_s"]
    assert throttled > 0
    rates_daemon.wait_for(lambda: stage_stats(api, pipeline, "calls")["throttled_s"] > throttled, 10,
                          what="throttled_s grows")  # fmt: skip
    stamps = sorted(float(s) for s in lines(rates_daemon, pipeline))
    assert_within_the_bucket(stamps, RATE, RATE)
    steady = [t for t in stamps if t0 + 1.0 <= t < t0 + 5.0]  # after the first second's burst
    per_second = len(steady) / 4.0
    assert RATE * 0.9 <= per_second <= RATE * 1.1, f"{per_second} calls/s, limit {RATE}/s: {steady}"
    metrics = api.get("/metrics").text
    row = next(line for line in metrics.splitlines()
               if line.startswith("pipelined_stage_throttled_seconds_total") and f'pipeline="{pipeline}"' in line)  # fmt: skip
    assert float(row.rsplit(" ", 1)[1]) > 0
    drain(rates_daemon, pipeline)  # workers waiting for tokens; the deadline dead-letters the rest
    record = api.get(f"/pipelines/{pipeline}/runs/{run}").json()
    assert record["state"] == "failed" and record["items"]["dead_lettered"] > 0, record
    called = len(lines(rates_daemon, pipeline))
    assert record["items"]["finished"] + record["items"]["dead_lettered"] == 200
    assert record["items"]["finished"] == called


@pytest.mark.parametrize("pipeline", ["wait-threads", "wait-processes", "wait-async"])
def test_a_drain_ends_the_wait_for_a_token_and_batches_never_outrun_their_tokens(
    rates_daemon: DaemonProcess, api: httpx.Client, pipeline: str
) -> None:
    run = inject(api, pipeline, "calls", list(range(5)))
    rates_daemon.wait_for(lambda: len(lines(rates_daemon, pipeline)) == 1, 30, what="the one call of the burst")
    rates_daemon.wait_for(lambda: stage_stats(api, pipeline, "calls")["throttled_s"] > 0.2, 10, what="a token wait")
    stats = stage_stats(api, pipeline, "calls")
    assert stats["items_in"] == 1  # one token: one item left for a worker (a batch of one)
    drain(rates_daemon, pipeline)  # the next token is an hour away: the wait must end at the deadline
    record = api.get(f"/pipelines/{pipeline}/runs/{run}").json()
    assert record["items"]["finished"] == 1 and record["items"]["dead_lettered"] == 4, record
    letters = api.get(f"/pipelines/{pipeline}/dead-letters").json()
    assert [letter["error"] for letter in letters] == ["shutdown"] * 4
    assert len(lines(rates_daemon, pipeline)) == 1


# -- concurrency caps -----------------------------------------------------------------------
def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(began, 1) for began, _ in spans] + [(ended, -1) for _, ended in spans], key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize(
    ("pipeline", "cap", "items"), [("cap-threads", 2, 60), ("cap-async", 2, 60), ("cap-processes", 1, 12), ("cap-fork", 1, 6)]
)
def test_concurrency_caps_items_in_progress(
    rates_daemon: DaemonProcess, api: httpx.Client, pipeline: str, cap: int, items: int
) -> None:
    run = inject(api, pipeline, "calls", list(range(items)))
    rates_daemon.wait_for(
        lambda: api.get(f"/pipelines/{pipeline}/runs/{run}").json()["state"] == "completed", 60, what=f"{run} done"
    )
    spans = [(float(a), float(b)) for a, b in (line.split() for line in lines(rates_daemon, pipeline))]
    assert len(spans) == items
    assert most_at_once(spans) == cap  # never more; and the cap is used, not a smaller one


# -- priorities -----------------------------------------------------------------------------
def test_an_urgent_run_overtakes_a_backlog_in_every_stage(rates_daemon: DaemonProcess, api: httpx.Client) -> None:
    backlog = inject(api, "backlog", "pass", list(range(10_000)))
    rates_daemon.wait_for(lambda: stage_stats(api, "backlog", "work")["items_in"] >= 300, 60, what="backlog flowing")
    r = api.post(
        "/pipelines/backlog/stages/pass/trigger?wait=true&timeout=120",
        json={"items": [f"u{i}" for i in range(50)], "priority": 5},
    )
    assert r.status_code == 200, r.text
    urgent = r.json()
    assert urgent["state"] == "completed" and urgent["priority"] == 5
    left = api.get(f"/pipelines/backlog/runs/{backlog}").json()
    assert left["priority"] == 0 and left["state"] == "running"
    assert left["items"]["in_flight"] >= 1000, left  # most of the backlog is still to come
    rates_daemon.wait_for(lambda: api.get(f"/pipelines/backlog/runs/{backlog}").json()["state"] == "completed", 120,
                          what="the backlog done")  # fmt: skip
    order = [line.split()[:2] for line in lines(rates_daemon, "backlog")]
    assert len(order) == 10_050
    places = [i for i, (run, _) in enumerate(order) if run == urgent["run"]]
    assert len(places) == 50
    overtaken = sum(1 for run, _ in order[places[0] : places[-1]] if run == backlog)
    assert overtaken <= 100, f"{overtaken} backlog items between the first and last urgent one"
    assert len(order) - places[-1] - 1 >= 1000  # the backlog's remainder came after every urgent item


def test_an_item_that_waited_priority_max_wait_is_served_next(rates_daemon: DaemonProcess, api: httpx.Client) -> None:
    busy = inject(api, "aging", "work", [f"b{i}" for i in range(10)], priority=5)  # the stage is busy...
    queued_at = time.time()
    old = inject(api, "aging", "work", ["old"])  # ...when the old item arrives,
    urgent = inject(api, "aging", "work", [f"u{i}" for i in range(150)], priority=5)  # then younger urgent ones
    for run in (busy, old, urgent):
        rates_daemon.wait_for(lambda run=run: api.get(f"/pipelines/aging/runs/{run}").json()["state"] == "completed", 60)
    order = [line.split() for line in lines(rates_daemon, "aging")]
    place = next(i for i, (run, item, _) in enumerate(order) if run == old and item == "old")
    before = sum(1 for run, _, _ in order[:place] if run == urgent)
    after = sum(1 for run, _, _ in order[place:] if run == urgent)
    assert before >= 5, "the old item did not wait behind the younger urgent run"
    assert after >= 20, "the old item was served only after the urgent run's remainder"
    waited = float(order[place][2]) - queued_at
    assert waited >= 0.9, f"served after {waited:.2f} s, before priority_max_wait (1 s)"


def test_a_producer_priority_key_and_the_trigger_body(rates_daemon: DaemonProcess, api: httpx.Client) -> None:
    def trigger(stage: str, body: dict[str, Any]) -> dict[str, Any]:
        r = api.post(f"/pipelines/urgent-source/stages/{stage}/trigger?wait=true&timeout=30", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert trigger("src", {})["priority"] == 3  # the producer's key
    assert trigger("src", {"args": {"n": 2}, "priority": -2})["priority"] == -2  # the trigger's wins
    assert trigger("pass", {"items": [1]})["priority"] == 0  # injected items: 0 unless given
    runs = api.get("/pipelines/urgent-source/runs").json()
    assert [run["priority"] for run in runs] == [0, -2, 3]
    for bad, words in ((11, "not 11"), ("high", "not a string"), (2.5, "not 2.5")):
        r = api.post("/pipelines/urgent-source/stages/src/trigger", json={"priority": bad})
        assert r.status_code == 400 and "'priority' must be an integer from -10 to 10" in r.json()["detail"], r.text
        assert words in r.json()["detail"]


def test_bad_values_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'priority_max_wait = "soon"\n[[stage]]\nname = "src"\nkind = "producer"\ncall = "pipelined.stages:count"\n'
        'priority = "high"\n[[stage]]\nname = "api"\nkind = "consumer"\ncall = "pipelined.stages:log"\n'
        'rate_limit = "10/day"\nconcurrency = 0\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipelined", "check", str(path)],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(DaemonProcess.package_dir())},
    )  # fmt: skip
    assert done.returncode == 1
    out = done.stdout + done.stderr
    for text in (
        'bad/priority_max_wait: must be a duration like "250ms"',
        'bad/src/priority: must be an integer from -10 to 10, got string "high"',
        'bad/api/rate_limit: must be a rate like "10/s", "600/min" or "5000/h"',
        "bad/api/concurrency: must be an integer >= 1, got integer 0",
    ):
        assert text in out, out
