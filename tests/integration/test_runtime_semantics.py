"""Runtime semantics through a real daemon: config.md (Callables, Errors and retries, Hooks,
Nested pipelines, accumulators, queues) and the run states and counters of api.md "Runs".

One daemon (module scope) runs every pipeline in PIPELINES; each test triggers its
own pipeline and waits for the run with `?wait=true`. Stage code records what it saw as JSON
lines in the file named by RTSEM_EVENTS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from harness import DaemonProcess

STAGES = r'''
import asyncio, json, os, time
def note(**fields):
    with open(os.environ["RTSEM_EVENTS"], "a") as fh: fh.write(json.dumps(fields) + "\n")
def gen(n=3, start=0): yield from range(start, start + n)
def listed(n=3): return list(range(n))
async def agen(n=3):
    for i in range(n): await asyncio.sleep(0); yield i
class Counter:
    def __init__(self, base=100): self.base = base
    def __call__(self, n=2): return [self.base + i for i in range(n)]
def evens(x): return x if x % 2 == 0 else None
def repeat(x): yield from [x] * (x % 3)
def record(x, tag=""): note(ev="item", tag=tag, x=x)
def ident(x): return x
async def aident(x): await asyncio.sleep(0); return x
def slow(x, seconds=0.005): time.sleep(seconds); return x
def fail(x): raise ValueError(f"bad {x}")
def raising_producer(n=3): yield from range(n); raise RuntimeError("producer broke")
def endless():
    i = 0
    while True: yield i; i += 1; time.sleep(0.01)
def paced(n=2, seconds=0.2, start=0):
    for i in range(start, start + n): time.sleep(seconds); yield i
async def polling(ctx):
    i = 0
    while not ctx.stopping: ctx.emit(i); i += 1; await asyncio.sleep(0.01)
    note(ev="polling", stopping=ctx.stopping, run=ctx.run)
def with_ctx(x, ctx):
    note(ev="ctx", pipeline=ctx.pipeline, stage=ctx.stage, run=ctx.run, stopping=ctx.stopping,
         logger=hasattr(ctx.logger, "info"))
    ctx.emit(x * 10)
    return x
def emit_to_computed(x, ctx): ctx.emit_to("no" + "where", x)
def emit_to_gate(x, ctx): ctx.emit_to("gate", x)
class Tracked:
    def __init__(self, tag="t"): self.tag = tag; note(ev="init", tag=tag)
    def setup(self): note(ev="setup", tag=self.tag)
    def close(self): note(ev="close", tag=self.tag)
    def __call__(self, x): return x
async def nap(x):
    note(ev="nap", phase="start", x=x, t=time.time())
    await asyncio.sleep(x)
    note(ev="nap", phase="end", x=x, t=time.time())
    return x
def on_error_pipeline(item, error, stage): note(ev="on_error", by="pipeline", item=item, error=repr(error), stage=stage)
def on_error_stage(item, error, stage): note(ev="on_error", by="stage", item=item, error=repr(error), stage=stage)
def before_run(run): note(ev="before_run", run=run["run"], state=run["state"])
def after_run(run): note(ev="after_run", run=run["run"], state=run["state"])
def raise_hook(*args): raise RuntimeError("hook broke")
'''


def producer(call: str, args: str = "", extra: str = "") -> str:
    lines = ['[[stage]]', 'name = "src"', 'kind = "producer"', f'call = "rtsem:{call}"', "auto_start = false"]
    if args:
        lines.append(f"args = {args}")
    return "\n".join(lines) + "\n" + extra


def stage(name: str, call: str, extra: str = "", kind: str = "processor") -> str:
    return f'[[stage]]\nname = "{name}"\nkind = "{kind}"\ncall = "rtsem:{call}"\n{extra}\n'


SINK = stage("out", "record", 'args = { tag = "out" }', kind="consumer")
ACCUMULATOR = '[[stage]]\nname = "batch"\nkind = "accumulator"\nmax_size = 3\n'

PIPELINES = {
    "kinds": (
        producer("gen", "{ n = 4, start = 10 }")
        + '[[stage]]\nname = "lst"\nkind = "producer"\ncall = "rtsem:listed"\nauto_start = false\n'
        + '[[stage]]\nname = "agen"\nkind = "producer"\ncall = "rtsem:agen"\nauto_start = false\n'
        + '[[stage]]\nname = "cls"\nkind = "producer"\ncall = "rtsem:Counter"\nauto_start = false\n'
        + "args = { base = 500 }\n"
        + SINK
    ),
    "filters": producer("gen", "{ n = 4, start = 10 }") + stage("f", "evens") + stage("d", "repeat") + SINK,
    "retries": (
        'max_retries = 2\nretry_backoff = "20ms"\n'
        '[hooks]\non_error = "rtsem:on_error_pipeline"\nbefore_run = "rtsem:before_run"\n'
        'after_run = "rtsem:after_run"\n'
        + producer("gen", "{ n = 2 }")
        + stage("boom", "fail", '[stage.hooks]\non_error = "rtsem:on_error_stage"')
        + SINK
    ),
    "raising": producer("raising_producer", "{ n = 3 }") + stage("s", "slow", "args = { seconds = 0.02 }") + SINK,
    "hooks-raise": (
        'max_retries = 0\n[hooks]\nafter_run = "rtsem:raise_hook"\non_error = "rtsem:raise_hook"\n'
        + producer("gen", "{ n = 2 }")
        + stage("boom", "fail")
        + SINK
    ),
    "gated": producer("gen") + '[stage.hooks]\nbefore_run = "rtsem:raise_hook"\n' + SINK,
    "dropping": (
        "max_retries = 0\n"
        + producer("listed", "{ n = 10 }")
        + stage("s", "slow", 'args = { seconds = 0.05 }\nqueue_size = 2\non_full = "drop_oldest"')
        + SINK
    ),
    "reject-producer": (
        'max_retries = 100\nretry_backoff = "5ms"\n'
        + producer("listed", "{ n = 60 }")
        + stage("s", "slow", 'queue_size = 3\non_full = "reject"')
        + SINK
    ),
    "reject-async": (
        'max_retries = 100\nretry_backoff = "5ms"\n'
        + producer("listed", "{ n = 20 }")
        + stage("a", "aident", "threads = 4")
        + stage("s", "slow", 'queue_size = 2\non_full = "reject"')
        + SINK
    ),
    "reject-emit-to": (
        'max_retries = 100\nretry_backoff = "5ms"\n'
        + producer("listed", "{ n = 20 }")
        + stage("r", "emit_to_gate", 'to = ["out"]')
        + stage("gate", "slow", 'queue_size = 2\non_full = "reject"\nto = ["out"]')
        + SINK
    ),
    "reject-emit-to-process": (
        'max_retries = 100\nretry_backoff = "5ms"\n'
        + producer("listed", "{ n = 20 }")
        + stage("r", "emit_to_gate", 'to = ["out"]\nprocesses = 1')
        + stage("gate", "slow", 'queue_size = 2\non_full = "reject"\nto = ["out"]')
        + SINK
    ),
    "async-slots": stage("a", "nap", "threads = 3") + SINK,
    "fifo": producer("paced").replace("auto_start = false", "auto_start = false\nthreads = 2") + SINK,
    "waiting": (
        producer("paced", "{ n = 1000, seconds = 0.01 }").replace("auto_start = false", "auto_start = false\nthreads = 2")
        + '[[stage]]\nname = "batch"\nkind = "accumulator"\nmax_size = 1000\nmax_wait = "150ms"\n'
        + stage("out", "record", 'args = { tag = "waited" }', "consumer")
    ),
    "batches": producer("gen", "{ n = 7 }") + ACCUMULATOR + stage("out", "record", 'args = { tag = "batch" }', "consumer"),
    "nested": (
        producer("gen", "{ n = 4 }")
        + '[[stage]]\nname = "par"\nkind = "pipeline"\nmode = "parallel"\n'
        + '[[stage.stage]]\nname = "x"\ncall = "rtsem:ident"\n[[stage.stage]]\nname = "y"\ncall = "rtsem:ident"\n'
        + '[[stage]]\nname = "seq"\nkind = "pipeline"\n'
        + '[[stage.stage]]\nname = "s1"\ncall = "rtsem:ident"\n[[stage.stage]]\nname = "s2"\ncall = "rtsem:ident"\n'
        + SINK
    ),
    "context": (
        'max_retries = 1\nretry_backoff = "5ms"\n'
        + producer("gen", "{ n = 2 }")
        + stage("c", "with_ctx")
        + stage("b", "emit_to_computed")
        + SINK
    ),
    "classes": producer("gen") + stage("c", "Tracked", 'threads = 2\nargs = { tag = "classes" }') + SINK,
    "draining": "max_retries = 0\n" + producer("endless") + stage("f", "evens") + SINK,
    "polling-drain": producer("polling") + SINK,
    "failing-drain": "max_retries = 0\n" + producer("endless") + stage("boom", "fail") + SINK,
    "deadline-blocked": (
        'drain_timeout = "300ms"\n'
        + producer("listed", "{ n = 400 }")
        + stage("s", "slow", "args = { seconds = 0.1 }\nqueue_size = 5")
        + SINK
    ),
    "deadline": (
        'drain_timeout = "300ms"\n'
        + producer("gen", "{ n = 4 }")
        + stage("s", "slow", "args = { seconds = 3 }")
        + SINK
    ),
}


@pytest.fixture(scope="module")
def rt_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("runtime")
    daemon = DaemonProcess(base, env={"RTSEM_EVENTS": str(base / "events.jsonl")})
    daemon.write_module("rtsem", STAGES)
    for name, text in PIPELINES.items():
        daemon.write_pipeline(name, text)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def events(daemon: DaemonProcess, ev: str) -> list[dict[str, Any]]:
    path = daemon.base_dir / "events.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["ev"] == ev]


def run_and_wait(daemon: DaemonProcess, pipeline: str, stage: str = "src", body: Any = None) -> dict[str, Any]:
    r = daemon.client.post(
        f"/pipelines/{pipeline}/stages/{stage}/trigger", params={"wait": "true", "timeout": "20"}, json=body or {}
    )
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] != "running"
    assert run["items"]["in_flight"] == 0
    return dict(run)


def stage_stats(daemon: DaemonProcess, pipeline: str) -> dict[str, dict[str, Any]]:
    r = daemon.client.get(f"/pipelines/{pipeline}/stats")
    assert r.status_code == 200
    return dict(r.json()["stages"])


def dead_letters(daemon: DaemonProcess, pipeline: str, run: str | None = None) -> list[dict[str, Any]]:
    r = daemon.client.get(f"/pipelines/{pipeline}/dead-letters", params={"limit": 1000})
    assert r.status_code == 200
    return [d for d in r.json() if run is None or d["run"] == run]


# -- callables -------------------------------------------------------------------------------
def test_producer_kinds_and_argument_merging(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "kinds", "src", {"args": {"n": 2}})  # TOML start = 10 kept
    assert run["items"] == {"produced": 2, "in_flight": 0, "finished": 2, "filtered": 0, "dead_lettered": 0}
    assert run["state"] == "completed" and run["error"] is None
    assert run_and_wait(rt_daemon, "kinds", "lst", {"args": {"n": 5}})["items"]["finished"] == 5
    assert run_and_wait(rt_daemon, "kinds", "agen", {"args": {"n": 4}})["items"]["finished"] == 4
    # a class: TOML args went to __init__, __call__ gets only the trigger's
    assert run_and_wait(rt_daemon, "kinds", "cls", {"args": {"n": 3}})["items"]["finished"] == 3
    r = rt_daemon.client.post("/pipelines/kinds/stages/cls/trigger", json={"args": {"base": 1}})
    assert r.status_code == 400 and "base" in r.json()["detail"]
    seen = sorted(e["x"] for e in events(rt_daemon, "item") if e["tag"] == "out")
    assert {10, 11, 500, 501, 502} <= set(seen)


def test_producer_runs_beyond_its_threads_wait_their_turn(rt_daemon: DaemonProcess) -> None:
    ids = []
    for _ in range(3):
        r = rt_daemon.client.post("/pipelines/fifo/stages/src/trigger")
        assert r.status_code == 202
        ids.append(r.json()["run"])
    for run_id in ids:
        assert rt_daemon.client.get(f"/pipelines/fifo/runs/{run_id}").json()["state"] == "running"
    runs = []
    for run_id in ids:
        url = f"/pipelines/fifo/runs/{run_id}"
        rt_daemon.wait_for(lambda url=url: rt_daemon.client.get(url).json()["state"] == "completed")
        runs.append(rt_daemon.client.get(url).json())
    first, second, third = ([datetime.fromisoformat(r[k]) for k in ("started_at", "finished_at")] for r in runs)
    assert second[0] < first[1]  # threads = 2: two at once
    # the third waited for a producer thread (each run produces for 0.4 s); regression:
    # started_at was the trigger's time, even for a run that waited its turn
    assert (third[0] - min(first[0], second[0])).total_seconds() >= 0.3
    assert all(run["items"]["finished"] == 2 for run in runs)


def test_filtering_and_generator_processors_count_per_api(rt_daemon: DaemonProcess) -> None:
    # 10..13 -> evens keeps 10, 12 (2 filtered) -> repeat: 10 once, 12 never (filtered)
    run = run_and_wait(rt_daemon, "filters")
    assert run["items"] == {"produced": 4, "in_flight": 0, "finished": 1, "filtered": 3, "dead_lettered": 0}
    assert run["state"] == "completed"
    rows = stage_stats(rt_daemon, "filters")
    assert (rows["f"]["items_in"], rows["f"]["items_out"]) == (4, 2)
    assert (rows["d"]["items_in"], rows["d"]["items_out"]) == (2, 1)


def test_ctx_fields_emit_and_unknown_emit_to_target_fails_the_attempt(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "context")
    seen = [e for e in events(rt_daemon, "ctx") if e["run"] == run["run"]]
    assert len(seen) == 2
    assert all(
        e["pipeline"] == "context" and e["stage"] == "c" and e["stopping"] is False and e["logger"] for e in seen
    )
    # c emits x and x*10; b's emit_to("nowhere") fails every attempt: 1 retry, then dead letters
    assert run["state"] == "failed"
    assert run["items"]["dead_lettered"] == 4 and run["items"]["finished"] == 0
    letters = dead_letters(rt_daemon, "context", run["run"])
    assert sorted(d["item"] for d in letters) == [0, 0, 1, 10]
    assert all(d["stage"] == "b" and d["attempts"] == 2 and "nowhere" in d["error"] for d in letters)
    assert stage_stats(rt_daemon, "context")["b"]["items_retried"] >= 4


# -- errors, retries, hooks -------------------------------------------------------------------
def test_retries_then_dead_letter_and_hooks_in_order(rt_daemon: DaemonProcess) -> None:
    began = time.monotonic()
    run = run_and_wait(rt_daemon, "retries")
    assert time.monotonic() - began >= 0.02 * 0.75 + 0.04 * 0.75  # two backoffs waited
    assert run["state"] == "failed" and "ValueError" in run["error"]
    assert run["items"] == {"produced": 2, "in_flight": 0, "finished": 0, "filtered": 0, "dead_lettered": 2}
    letters = dead_letters(rt_daemon, "retries", run["run"])
    assert sorted(d["item"] for d in letters) == [0, 1]
    assert all(d["attempts"] == 3 and d["error"] == f"ValueError: bad {d['item']}" for d in letters)
    hooks = [e for e in events(rt_daemon, "on_error") if e["stage"] == "boom"]
    for item in (0, 1):
        assert [e["by"] for e in hooks if e["item"] == item] == ["pipeline", "stage"]
        assert all("ValueError" in e["error"] for e in hooks if e["item"] == item)
    assert [e["state"] for e in events(rt_daemon, "before_run") if e["run"] == run["run"]] == ["running"]
    assert [e["state"] for e in events(rt_daemon, "after_run") if e["run"] == run["run"]] == ["failed"]
    row = stage_stats(rt_daemon, "retries")["boom"]
    assert (row["items_failed"], row["items_retried"], row["items_dead_lettered"]) == (6, 4, 2)


def test_producer_that_raises_fails_its_run_and_its_items_still_finish(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "raising")
    assert run["state"] == "failed" and "producer broke" in run["error"]
    assert run["items"] == {"produced": 3, "in_flight": 0, "finished": 3, "filtered": 0, "dead_lettered": 0}


def test_raising_before_run_fails_the_run_and_raising_hooks_are_ignored(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "gated")
    assert run["state"] == "failed" and "hook broke" in run["error"]
    assert run["items"]["produced"] == 0
    run = run_and_wait(rt_daemon, "hooks-raise")  # on_error and after_run raise: logged, ignored
    assert run["state"] == "failed" and run["items"]["dead_lettered"] == 2
    assert len(dead_letters(rt_daemon, "hooks-raise", run["run"])) == 2
    assert rt_daemon.pipeline("hooks-raise")["state"] == "running"


# -- queues -------------------------------------------------------------------------------------
def test_drop_oldest_dead_letters_dropped_items(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "dropping")
    items = run["items"]
    assert items["dead_lettered"] > 0 and run["state"] == "failed"
    assert items["produced"] == 10 == items["finished"] + items["dead_lettered"]
    letters = dead_letters(rt_daemon, "dropping", run["run"])
    assert len(letters) == items["dead_lettered"]
    assert all(d["error"] == "dropped" and d["stage"] == "s" for d in letters)
    row = stage_stats(rt_daemon, "dropping")["s"]
    assert row["items_dropped"] == row["items_dead_lettered"] == items["dead_lettered"]


@pytest.mark.parametrize(
    ("pipeline", "n", "sender"),
    [
        ("reject-producer", 60, "src"),
        ("reject-async", 20, "a"),
        ("reject-emit-to", 20, "r"),
        ("reject-emit-to-process", 20, "r"),
    ],
)
def test_reject_fails_the_senders_attempt_and_it_is_retried(
    rt_daemon: DaemonProcess, pipeline: str, n: int, sender: str
) -> None:
    # regressions: a producer's chunk larger than the queue was refused forever; an async
    # stage's refused outputs (and a refused ctx.emit_to) vanished and hung the run
    run = run_and_wait(rt_daemon, pipeline)
    assert run["state"] == "completed", run
    assert run["items"] == {"produced": n, "in_flight": 0, "finished": n, "filtered": 0, "dead_lettered": 0}
    rows = stage_stats(rt_daemon, pipeline)
    if sender != "src":
        assert rows[sender]["items_failed"] == rows[sender]["items_retried"] > 0
    assert rows["out"]["items_in"] >= n


def test_async_stage_keeps_threads_coroutines_running(rt_daemon: DaemonProcess) -> None:
    # one slow item among fast ones: its chunk-mates free their slots as they finish
    run = run_and_wait(rt_daemon, "async-slots", "a", {"items": [0.6] + [0.1] * 8})
    assert run["state"] == "completed" and run["items"]["finished"] == 9
    naps = events(rt_daemon, "nap")
    slow_end = next(e["t"] for e in naps if e["phase"] == "end" and e["x"] == 0.6)
    first_fast_end = min(e["t"] for e in naps if e["phase"] == "end" and e["x"] == 0.1)
    # regression: a chunk's slots were freed only when all of it was done (after the slow one)
    assert sum(1 for e in naps if e["phase"] == "start" and first_fast_end <= e["t"] < slow_end) >= 2
    running = max_running = 0
    for e in sorted(naps, key=lambda e: (e["t"], e["phase"] == "start")):
        running += 1 if e["phase"] == "start" else -1
        max_running = max(max_running, running)
    assert max_running == 3


# -- accumulators and nested pipelines ------------------------------------------------------------
def test_accumulator_batches_and_flushes_the_partial_batch_when_the_run_ends(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "batches")
    assert run["state"] == "completed"
    assert run["items"] == {"produced": 7, "in_flight": 0, "finished": 3, "filtered": 0, "dead_lettered": 0}
    batches = [e["x"] for e in events(rt_daemon, "item") if e["tag"] == "batch"][-3:]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    row = stage_stats(rt_daemon, "batches")["batch"]
    assert (row["kind"], row["items_out"]) == ("accumulator", 3)


def test_accumulator_max_wait_per_run_batches_and_flush_on_drain(rt_daemon: DaemonProcess) -> None:
    runs = [
        rt_daemon.client.post("/pipelines/waiting/stages/src/trigger", json={"args": {"start": start}}).json()["run"]
        for start in (0, 10_000)
    ]
    # max_wait: partial batches leave while both runs are still producing
    rt_daemon.wait_for(lambda: any(e["tag"] == "waited" for e in events(rt_daemon, "item")))
    assert all(rt_daemon.client.get(f"/pipelines/waiting/runs/{r}").json()["state"] == "running" for r in runs)
    r = rt_daemon.client.post("/pipelines/waiting/drain", params={"wait": "true"})
    assert r.status_code == 200
    batches = [e["x"] for e in events(rt_daemon, "item") if e["tag"] == "waited"]
    assert all(len({x >= 10_000 for x in batch}) == 1 for batch in batches)  # never mixes runs
    done = [rt_daemon.client.get(f"/pipelines/waiting/runs/{r}").json() for r in runs]
    assert [d["state"] for d in done] == ["cancelled", "cancelled"]
    # on drain the partial batches were flushed: every produced item is in exactly one batch
    flat = sorted(x for batch in batches for x in batch)
    assert len(flat) == len(set(flat)) == sum(d["items"]["produced"] for d in done)
    assert sum(d["items"]["finished"] for d in done) == len(batches)


def test_nested_parallel_broadcasts_and_each_copy_finishes(rt_daemon: DaemonProcess) -> None:
    run = run_and_wait(rt_daemon, "nested")
    assert run["state"] == "completed"
    assert run["items"] == {"produced": 4, "in_flight": 0, "finished": 8, "filtered": 0, "dead_lettered": 0}
    rows = stage_stats(rt_daemon, "nested")
    assert rows["par"]["kind"] == "pipeline"
    assert (rows["par"]["items_in"], rows["par"]["items_out"]) == (4, 8)
    assert rows["x"]["items_in"] == rows["y"]["items_in"] == 4
    assert (rows["seq"]["items_in"], rows["s1"]["items_in"], rows["s2"]["items_in"]) == (8, 8, 8)


# -- classes, drain ---------------------------------------------------------------------------------
def test_class_instances_per_worker_set_up_and_closed_on_drain(rt_daemon: DaemonProcess) -> None:
    assert [e["ev"] for e in events(rt_daemon, "init") if e["tag"] == "classes"] == ["init", "init"]
    assert len([e for e in events(rt_daemon, "setup") if e["tag"] == "classes"]) == 2
    assert run_and_wait(rt_daemon, "classes")["state"] == "completed"
    r = rt_daemon.client.post("/pipelines/classes/drain", params={"wait": "true"})
    assert r.status_code == 200 and r.json()["state"] == "drained"
    assert len([e for e in events(rt_daemon, "close") if e["tag"] == "classes"]) == 2


def drain_during_run(daemon: DaemonProcess, pipeline: str) -> dict[str, Any]:
    r = daemon.client.post(f"/pipelines/{pipeline}/stages/src/trigger")
    assert r.status_code == 202
    run_id = r.json()["run"]
    daemon.wait_for(lambda: daemon.client.get(f"/pipelines/{pipeline}/runs/{run_id}").json()["items"]["produced"] >= 6)
    r = daemon.client.post(f"/pipelines/{pipeline}/drain", params={"wait": "true"})
    assert r.status_code == 200 and r.json()["state"] == "drained"
    return dict(daemon.client.get(f"/pipelines/{pipeline}/runs/{run_id}").json())


def test_drain_cancels_a_running_producer_and_everything_produced_ends(rt_daemon: DaemonProcess) -> None:
    run = drain_during_run(rt_daemon, "draining")
    items = run["items"]
    assert run["state"] == "cancelled" and run["finished_at"] is not None
    assert items["in_flight"] == 0 and items["dead_lettered"] == 0
    assert items["produced"] == items["finished"] + items["filtered"] + items["dead_lettered"]


def test_drain_cancels_an_async_producer_that_polls_ctx_stopping(rt_daemon: DaemonProcess) -> None:
    run = drain_during_run(rt_daemon, "polling-drain")
    items = run["items"]
    assert run["state"] == "cancelled"
    assert items["produced"] == items["finished"] >= 6 and items["in_flight"] == 0
    assert [e["stopping"] for e in events(rt_daemon, "polling") if e["run"] == run["run"]] == [True]


def test_failed_wins_over_cancelled(rt_daemon: DaemonProcess) -> None:
    run = drain_during_run(rt_daemon, "failing-drain")
    items = run["items"]
    assert run["state"] == "failed"
    assert items["produced"] == items["dead_lettered"] > 0


def test_drain_deadline_dead_letters_shutdown_and_wait_sees_drained(rt_daemon: DaemonProcess) -> None:
    r = rt_daemon.client.post("/pipelines/deadline/stages/src/trigger")
    run_id = r.json()["run"]
    rt_daemon.wait_for(lambda: stage_stats(rt_daemon, "deadline")["s"]["busy"] == 1)
    began = time.monotonic()
    r = rt_daemon.client.post("/pipelines/deadline/drain", params={"wait": "true"})  # drain_timeout 300ms
    # regression: the wait ended with the deadline and answered 202 "draining"
    assert (r.status_code, r.json()["state"]) == (200, "drained")
    assert time.monotonic() - began < 2.5  # not held up by the worker still sleeping in user code
    run = rt_daemon.client.get(f"/pipelines/deadline/runs/{run_id}").json()
    assert run["state"] == "failed" and run["items"]["dead_lettered"] == 4
    letters = dead_letters(rt_daemon, "deadline", run_id)
    assert sorted(d["item"] for d in letters) == [0, 1, 2, 3]
    assert all(d["error"] == "shutdown" for d in letters)


def test_drain_deadline_with_a_producer_blocked_on_a_full_queue(rt_daemon: DaemonProcess) -> None:
    run_id = rt_daemon.client.post("/pipelines/deadline-blocked/stages/src/trigger").json()["run"]
    url = f"/pipelines/deadline-blocked/runs/{run_id}"
    rt_daemon.wait_for(lambda: rt_daemon.client.get(url).json()["items"]["finished"] >= 2)
    r = rt_daemon.client.post("/pipelines/deadline-blocked/drain", params={"wait": "true"})
    assert (r.status_code, r.json()["state"]) == (200, "drained")
    run = rt_daemon.client.get(url).json()
    items = run["items"]
    # regression: items of a chunk half put into the queue were dead-lettered twice
    assert run["state"] == "failed" and items["in_flight"] == 0
    assert items["produced"] == items["finished"] + items["dead_lettered"]
    letters = dead_letters(rt_daemon, "deadline-blocked", run_id)
    assert len(letters) == len({d["item"] for d in letters}) == items["dead_lettered"] > 0
    assert {d["error"] for d in letters} == {"shutdown"}


# -- dead letters across a restart ------------------------------------------------------------------
def test_dead_letters_survive_a_restart_and_run_ids_are_not_reused(daemon: DaemonProcess) -> None:
    daemon.extra_env["RTSEM_EVENTS"] = str(daemon.base_dir / "events.jsonl")
    daemon.write_module("rtsem", STAGES)
    daemon.write_pipeline("retries", PIPELINES["hooks-raise"])
    daemon.start()
    first = run_and_wait(daemon, "retries")
    assert first["items"]["dead_lettered"] == 2
    jsonl = daemon.state_dir / "dead-letters" / "retries.jsonl"
    assert len(jsonl.read_text().splitlines()) == 2
    assert daemon.stop() == 0
    daemon.proc = None
    daemon.start()
    before = dead_letters(daemon, "retries")
    assert {d["run"] for d in before} == {first["run"]}
    assert {"id", "run", "stage", "at", "attempts", "error", "item"} <= set(before[0])  # + traceback, truncated (#10.4, #10.9)
    second = run_and_wait(daemon, "retries")
    # regression: numbering restarted at r-000001, so the new run's id named old dead letters too
    assert second["run"] != first["run"]
    assert len(dead_letters(daemon, "retries", second["run"])) == 2
    assert len(dead_letters(daemon, "retries")) == 4
