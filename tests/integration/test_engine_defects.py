"""Issue 15 through a real daemon: each test reproduces one engine defect a concurrency review
found (numpy-like `==`, StopIteration, accumulator max_wait, yield + ctx.emit, reject behind a
router, emit_to upstream, BaseExceptions, nested injection, drain during an inject, an inline
consumer under an accumulator) and checks what must hold instead.

One daemon (module scope) runs every pipeline below; each test drives its own. Stage code
talks to the test through files in the directory named by ENGDEF_DIR (records, gates).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness import DaemonProcess

STAGES = r'''
import asyncio, json, os, time
from dataclasses import dataclass

DIR = os.environ["ENGDEF_DIR"]


def note(tag, value):
    with open(os.path.join(DIR, tag + ".jsonl"), "a") as fh:
        fh.write(json.dumps(value) + "\n")


def gate(name, timeout=30.0):
    """Wait until the test creates the file `name` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(DIR, name)) and time.monotonic() < deadline:
        time.sleep(0.01)


class Truthless:
    """What numpy's `array == None` returns: asking for its truth raises."""
    def __bool__(self):
        raise ValueError("The truth value of an array with more than one element is ambiguous")


class Arrayish:
    """A numpy-like value: `==` is elementwise and returns a Truthless."""
    def __init__(self, v):
        self.v = v
    def __eq__(self, other):
        return Truthless()
    __hash__ = None


@dataclass
class Point:
    x: int


def gen(n=10):
    yield from range(n)


def to_array(x):
    return Arrayish(x)


def from_array(a):
    return a.v


def record(x, tag="out"):
    note(tag, x if not isinstance(x, Point) else {"point": x.x})


def stop_at_threes(x):
    if x % 10 == 3:
        raise StopIteration  # from a plain function: must fail this item, nothing else
    return x


def busy():
    """Keep an accumulator's queue full until the test says stop."""
    i = 0
    while not os.path.exists(os.path.join(DIR, "stop-busy")):
        yield i
        i += 1


def lone():
    """One item, then wait (up to 10 s) until its batch reached the consumer."""
    yield "lone"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(DIR, "lone.jsonl")):
            note("lone-producer", "saw its batch")
            return
        time.sleep(0.01)
    note("lone-producer", "no batch within 10 s")


def slow_batches(batch):
    time.sleep(0.005)
    if "lone" in batch:
        note("lone", batch)


def yield_and_emit(ctx, n=22000):
    for i in range(n):
        if i % 2:
            ctx.emit(i)
        else:
            yield i


def slow_record(x, tag="slow", seconds=0.02):
    time.sleep(seconds)
    note(tag, x)


def ident(x):
    return x


def loop_back(x, ctx):
    if x >= 0:
        ctx.emit_to("a", -1 - x)  # upstream: every item goes round once more
    return x


def count_only(x, tag="count"):
    pass


async def async_exit(x):
    await asyncio.sleep(0)
    if x == 3:
        raise SystemExit(3)
    return x


def interrupted_producer(n=3):
    yield from range(n)
    raise KeyboardInterrupt


def exit_hook(run):
    raise SystemExit("after_run hook exits")


def held(x, name="release", tag="held"):
    gate(name)
    note(tag, x)


def fast_then_stuck(batch):
    if "stuck" in batch:
        gate("never", timeout=30)
    return None


def points(n=20):
    for i in range(n):
        yield Point(i)
'''


def producer(call: str, args: str = "", extra: str = "") -> str:
    lines = ["[[stage]]", 'name = "src"', 'kind = "producer"', f'call = "engdef:{call}"', "auto_start = false"]
    if args:
        lines.append(f"args = {args}")
    return "\n".join(lines) + "\n" + extra + "\n"


def stage(name: str, call: str, extra: str = "", kind: str = "processor") -> str:
    return f'[[stage]]\nname = "{name}"\nkind = "{kind}"\ncall = "engdef:{call}"\n{extra}\n'


def sink(tag: str) -> str:
    return stage("out", "record", f'args = {{ tag = "{tag}" }}', kind="consumer")


PIPELINES = {
    "numpy-threads": producer("gen", "{ n = 50 }") + stage("arr", "to_array") + stage("back", "from_array")
    + sink("numpy-threads"),
    "numpy-processes": "max_processes = 2\n" + producer("gen", "{ n = 50 }")
    + stage("arr", "to_array", "processes = 2") + stage("back", "from_array") + sink("numpy-processes"),
    "stopiteration": "max_retries = 0\n" + producer("gen", "{ n = 100 }") + stage("s", "stop_at_threes")
    + sink("stopiteration"),
    "starved": producer("busy").replace('"src"', '"busy"') + producer("lone").replace('"src"', '"lone"')
    + '[[stage]]\nname = "batch"\nkind = "accumulator"\nmax_size = 5\nmax_wait = "200ms"\n'
    + stage("out", "slow_batches", "queue_size = 1", kind="consumer"),
    "mixed-producer": producer("yield_and_emit") + stage("out", "count_only", kind="consumer"),
    "reject-broadcast": 'max_retries = 1000\nretry_backoff = "2ms"\n'
    + producer("gen", "{ n = 20 }", 'to = ["a", "b"]\nfanout = "broadcast"')
    + stage("a", "record", 'args = { tag = "bcast-a" }', kind="consumer")
    + stage("b", "slow_record", 'args = { tag = "bcast-b" }\nqueue_size = 2\non_full = "reject"', kind="consumer"),
    "emit-upstream": 'drain_timeout = "1s"\nqueue_size = 100\n' + producer("gen", "{ n = 5000 }")
    + stage("a", "ident") + stage("b", "loop_back") + stage("out", "count_only", kind="consumer"),
    "emit-upstream-threads": 'drain_timeout = "1s"\n' + producer("gen", "{ n = 20000 }")
    + stage("a", "ident", "threads = 2") + stage("b", "loop_back") + stage("out", "count_only", kind="consumer"),
    "async-exit": "max_retries = 0\n" + producer("gen", "{ n = 6 }") + stage("a", "async_exit", "threads = 2")
    + sink("async-exit"),
    "producer-interrupt": producer("interrupted_producer") + sink("producer-interrupt"),
    "hook-exit": '[hooks]\nafter_run = "engdef:exit_hook"\n' + producer("gen", "{ n = 3 }") + sink("hook-exit"),
    "nested-block": 'drain_timeout = "1s"\n'
    + '[[stage]]\nname = "inner"\nkind = "pipeline"\n'
    + '[[stage.stage]]\nname = "h"\nkind = "consumer"\ncall = "engdef:held"\nqueue_size = 1\n'
    + 'args = { name = "release-nested-block", tag = "nested-block" }\n',
    "nested-parallel": 'drain_timeout = "1s"\n'
    + '[[stage]]\nname = "par"\nkind = "pipeline"\nmode = "parallel"\n'
    + '[[stage.stage]]\nname = "c2"\nkind = "consumer"\ncall = "engdef:record"\nargs = { tag = "par-c2" }\n'
    + '[[stage.stage]]\nname = "c1"\nkind = "consumer"\ncall = "engdef:held"\nqueue_size = 3\non_full = "reject"\n'
    + 'args = { name = "release-nested-parallel", tag = "par-c1" }\n',
    "inject-drain": 'drain_timeout = "500ms"\n'
    + stage("h", "held", 'queue_size = 1\nargs = { name = "release-inject-drain", tag = "inject-drain" }',
            kind="consumer"),
    "acc-inline": 'drain_timeout = "500ms"\n'
    + '[[stage]]\nname = "batch"\nkind = "accumulator"\nmax_size = 1\n'
    + stage("out", "fast_then_stuck", kind="consumer"),
}


@pytest.fixture(scope="module")
def engdef(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("engdef")
    records = base / "records"
    records.mkdir()
    daemon = DaemonProcess(base, env={"ENGDEF_DIR": str(records)})
    daemon.records = records  # type: ignore[attr-defined]
    daemon.write_module("engdef", STAGES)
    for name, text in PIPELINES.items():
        daemon.write_pipeline(name, text)
    daemon.start(timeout=60)
    try:
        yield daemon
    finally:
        for gate in ("release-nested-block", "release-nested-parallel", "release-inject-drain", "never", "stop-busy"):
            (records / gate).touch()
        daemon.close()


def records(daemon: DaemonProcess, tag: str) -> list[Any]:
    path = daemon.records / f"{tag}.jsonl"  # type: ignore[attr-defined]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def release(daemon: DaemonProcess, name: str) -> None:
    (daemon.records / name).touch()  # type: ignore[attr-defined]


def run_to_end(daemon: DaemonProcess, pipeline: str, body: dict[str, Any] | None = None,
               stage: str = "src", timeout: float = 20) -> dict[str, Any]:
    r = daemon.client.post(f"/pipelines/{pipeline}/stages/{stage}/trigger?wait=true&timeout={timeout}",
                           json=body or {}, timeout=timeout + 10)
    assert r.status_code == 200, f"run did not end within {timeout} s: {r.status_code} {r.text}"
    return dict(r.json())


def dead_letters(daemon: DaemonProcess, pipeline: str) -> list[dict[str, Any]]:
    return list(daemon.client.get(f"/pipelines/{pipeline}/dead-letters?limit=1000").json())


# -- 15.1 outputs whose `== None` is not a bool ------------------------------------------------
@pytest.mark.parametrize("pipeline", ["numpy-threads", "numpy-processes"])
def test_numpy_like_outputs_flow_like_any_value(engdef: DaemonProcess, pipeline: str) -> None:
    run = run_to_end(engdef, pipeline)
    assert run["state"] == "completed", run
    assert run["items"] == {"produced": 50, "in_flight": 0, "finished": 50, "filtered": 0, "dead_lettered": 0}
    assert sorted(records(engdef, pipeline)) == list(range(50))
    assert dead_letters(engdef, pipeline) == []
    assert engdef.client.get(f"/pipelines/{pipeline}/stats").json()["stages"]["arr"]["items_failed"] == 0


# -- 15.3 StopIteration from a plain function --------------------------------------------------
def test_stopiteration_from_a_plain_function_fails_only_that_item(engdef: DaemonProcess) -> None:
    run = run_to_end(engdef, "stopiteration")
    assert run["items"]["produced"] == 100
    assert run["items"]["finished"] == 90, run
    assert run["items"]["dead_lettered"] == 10, run
    assert run["state"] == "failed" and "StopIteration" in run["error"], run
    assert sorted(records(engdef, "stopiteration")) == [x for x in range(100) if x % 10 != 3]
    letters = [dl for dl in dead_letters(engdef, "stopiteration") if dl["run"] == run["run"]]
    assert sorted(dl["item"] for dl in letters) == [x for x in range(100) if x % 10 == 3]
    assert all(dl["error"].startswith("StopIteration") for dl in letters), letters


# -- 15.4 accumulator max_wait while its queue keeps receiving ---------------------------------
def test_accumulator_max_wait_flushes_while_its_queue_is_never_empty(engdef: DaemonProcess) -> None:
    busy = engdef.client.post("/pipelines/starved/stages/busy/trigger", json={})
    assert busy.status_code == 202, busy.text
    engdef.wait_for(lambda: engdef.client.get("/pipelines/starved/stats").json()["stages"]["out"]["items_in"] > 5)
    try:
        lone = run_to_end(engdef, "starved", stage="lone")
    finally:
        release(engdef, "stop-busy")
    assert lone["state"] == "completed", lone
    assert records(engdef, "lone-producer") == ["saw its batch"]  # flushed by max_wait, behind the busy run
    assert records(engdef, "lone") == [["lone"]]
    engdef.wait_for(lambda: engdef.client.get(f"/pipelines/starved/runs/{busy.json()['run']}").json()["state"]
                    == "completed", timeout=20)


# -- 15.5 a producer that yields and calls ctx.emit ---------------------------------------------
def test_producer_that_yields_and_emits_produces_everything(engdef: DaemonProcess) -> None:
    run = run_to_end(engdef, "mixed-producer")
    assert run["state"] == "completed", run
    assert run["items"]["produced"] == 22000
    assert run["items"]["finished"] == 22000


# -- 15.6 on_full = "reject" behind a router -----------------------------------------------------
def test_reject_behind_a_broadcast_never_duplicates(engdef: DaemonProcess) -> None:
    run = run_to_end(engdef, "reject-broadcast")
    assert run["state"] == "completed", run
    assert Counter(records(engdef, "bcast-a")) == Counter(range(20))
    assert Counter(records(engdef, "bcast-b")) == Counter(range(20))
    assert run["items"]["finished"] == 40, run


# -- 15.7 ctx.emit_to towards an upstream stage --------------------------------------------------
@pytest.mark.parametrize(("pipeline", "n"), [("emit-upstream", 5000), ("emit-upstream-threads", 20000)])
def test_emit_to_upstream_never_deadlocks_when_queues_fill(engdef: DaemonProcess, pipeline: str, n: int) -> None:
    run = run_to_end(engdef, pipeline, timeout=60)
    assert run["state"] == "completed", run
    assert run["items"]["produced"] == n
    assert run["items"]["finished"] == 2 * n, run


# -- 15.8 BaseExceptions outside the per-item guard ----------------------------------------------
def test_systemexit_in_an_async_stage_fails_the_item_and_the_stage_goes_on(engdef: DaemonProcess) -> None:
    first = run_to_end(engdef, "async-exit")
    assert first["state"] == "failed" and first["items"]["dead_lettered"] == 1, first
    assert first["items"]["finished"] == 5
    second = run_to_end(engdef, "async-exit")
    assert second["items"]["finished"] == 5 and second["items"]["dead_lettered"] == 1, second
    assert "SystemExit" in engdef.logs()


def test_keyboardinterrupt_in_a_producer_fails_its_run_and_later_runs_still_run(engdef: DaemonProcess) -> None:
    first = run_to_end(engdef, "producer-interrupt")
    assert first["state"] == "failed" and "KeyboardInterrupt" in first["error"], first
    assert first["items"]["finished"] == 3
    second = run_to_end(engdef, "producer-interrupt")
    assert second["state"] == "failed" and second["items"]["finished"] == 3, second


def test_systemexit_in_after_run_is_logged_and_the_next_run_still_runs(engdef: DaemonProcess) -> None:
    for _ in range(3):
        run = run_to_end(engdef, "hook-exit")
        assert run["state"] == "completed" and run["items"]["finished"] == 3, run
    engdef.wait_log("after_run hook exits")
    threads = engdef.client.get("/pipelines/hook-exit/stats").json()["stages"]
    assert threads["out"]["items_in"] >= 9


# -- 15.9 injecting into a nested pipeline -------------------------------------------------------
def test_inject_into_a_nested_pipeline_is_time_bounded(engdef: DaemonProcess) -> None:
    first = engdef.client.post("/pipelines/nested-block/stages/inner/trigger", json={"items": [1, 2]})
    assert first.status_code == 202, first.text  # one item held by the consumer, one fills its queue
    engdef.wait_for(lambda: engdef.client.get("/pipelines/nested-block/stats").json()["stages"]["h"]["busy"] == 1)
    try:
        second = engdef.client.post("/pipelines/nested-block/stages/inner/trigger", json={"items": [3, 4, 5]},
                                    timeout=20)
    except httpx.TimeoutException:
        pytest.fail("the trigger was still blocked after 20 s (a plain stage answers 503 after 5 s)")
    finally:
        release(engdef, "release-nested-block")
    assert second.status_code == 503, second.text
    assert "within 5 s" in second.json()["detail"], second.text
    engdef.wait_for(lambda: sorted(records(engdef, "nested-block")) == [1, 2], timeout=10)


def test_inject_into_a_parallel_block_is_all_or_nothing(engdef: DaemonProcess) -> None:
    first = engdef.client.post("/pipelines/nested-parallel/stages/par/trigger", json={"items": [1, 2, 3]})
    assert first.status_code == 202, first.text  # c1: one item held, two queued (room for one more)
    engdef.wait_for(lambda: len(records(engdef, "par-c2")) == 3)
    engdef.wait_for(lambda: engdef.client.get("/pipelines/nested-parallel/stats").json()["stages"]["c1"]["busy"])
    runs_before = engdef.client.get("/pipelines/nested-parallel/runs").json()
    refused = engdef.client.post("/pipelines/nested-parallel/stages/par/trigger",
                                 json={"items": [10, 11, 12, 13, 14]})
    assert refused.status_code == 429, refused.text
    runs_after = engdef.client.get("/pipelines/nested-parallel/runs").json()
    assert [r["run"] for r in runs_after] == [r["run"] for r in runs_before]
    release(engdef, "release-nested-parallel")
    engdef.wait_for(lambda: sorted(records(engdef, "par-c1")) == [1, 2, 3])
    third = engdef.client.post("/pipelines/nested-parallel/stages/par/trigger?wait=true", json={"items": [20]})
    assert third.status_code == 200 and third.json()["state"] == "completed", third.text
    assert sorted(records(engdef, "par-c2")) == [1, 2, 3, 20]  # none of the refused items


# -- 15.10 drain deadline during a blocked inject ------------------------------------------------
def test_drain_deadline_during_a_blocked_inject(engdef: DaemonProcess) -> None:
    r = engdef.client.post("/pipelines/inject-drain/stages/h/trigger", json={"items": [1, 2]})
    assert r.status_code == 202, r.text
    answers: list[httpx.Response] = []

    def blocked_inject() -> None:
        answers.append(engdef.client.post("/pipelines/inject-drain/stages/h/trigger", json={"items": [3, 4, 5]},
                                          timeout=20))

    thread = threading.Thread(target=blocked_inject)
    thread.start()
    engdef.wait_for(lambda: len(engdef.client.get("/pipelines/inject-drain/runs").json()) == 2)
    drained = engdef.client.post("/pipelines/inject-drain/drain?wait=true&timeout=10")
    thread.join(20)
    release(engdef, "release-inject-drain")
    assert drained.status_code == 200, drained.text
    assert answers and answers[0].status_code in (409, 503), answers[0].text if answers else "no answer"
    runs = engdef.client.get("/pipelines/inject-drain/runs").json()
    assert all(r["state"] != "running" for r in runs), runs
    assert engdef.client.post("/pipelines/inject-drain/start").status_code == 200


# -- 15.11 drain deadline while an accumulator runs its consumer inline -------------------------
def test_drain_deadline_holds_with_a_stuck_inline_consumer(engdef: DaemonProcess) -> None:
    # the consumer's calls have been fast (big chunks taken by its own thread): the accumulator
    # then runs it inline, in the accumulator's thread
    warm = engdef.client.post("/pipelines/acc-inline/stages/out/trigger?wait=true",
                              json={"items": [[i] for i in range(5000)]})
    assert warm.status_code == 200 and warm.json()["state"] == "completed", warm.text
    r = engdef.client.post("/pipelines/acc-inline/stages/batch/trigger", json={"items": ["stuck", 1, 2]})
    assert r.status_code == 202, r.text
    engdef.wait_for(lambda: engdef.client.get("/pipelines/acc-inline/stats").json()["stages"]["out"]["busy"] == 1)
    drained = engdef.client.post("/pipelines/acc-inline/drain?wait=true&timeout=5", timeout=20)
    assert drained.status_code == 200, f"not drained 5 s after a 500 ms deadline: {drained.text}"
    release(engdef, "never")
