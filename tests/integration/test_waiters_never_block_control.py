"""Callers that wait (`trigger?wait=true`, `drain?wait=true`) never delay control operations.

100 runs are held by a slow stage while 100 clients wait for them with `?wait=true`; meanwhile
`POST /reload`, a drain with `?wait=true`, a start, `/health` and `/stats` all answer — each
assertion is made while every waiter is still waiting (no wall-clock threshold).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from harness import DaemonProcess

WAITERS = 100

STAGES = '''
import os, time


def one():
    yield 1


def drop(x):
    return None


def hold(x):
    while not os.path.exists(os.environ["HOLD_GATE"]):
        time.sleep(0.02)
    return x
'''

SLOW = '''
[[stage]]
name = "make"
kind = "producer"
call = "holding:one"
auto_start = false

[[stage]]
name = "hold"
call = "holding:hold"
threads = 2
'''

QUICK = '''
[[stage]]
name = "make"
kind = "producer"
call = "holding:one"
auto_start = false

[[stage]]
name = "drop"
kind = "consumer"
call = "holding:drop"
'''


@pytest.mark.timeout(180)
def test_reload_drain_start_health_and_stats_answer_while_100_callers_wait(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: DaemonProcess = make_daemon()
    gate = daemon.base_dir / "gate"
    daemon.extra_env["HOLD_GATE"] = str(gate)
    daemon.write_module("holding", STAGES)
    daemon.write_pipeline("slow", SLOW)
    daemon.write_pipeline("quick", QUICK)
    daemon.start()
    limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=WAITERS + 10)
    with httpx.Client(base_url=daemon.url, timeout=120, limits=limits) as waiters, \
            ThreadPoolExecutor(WAITERS) as pool:  # fmt: skip
        waiting: list[Future[httpx.Response]] = [
            pool.submit(waiters.post, "/pipelines/slow/stages/make/trigger?wait=true&timeout=120")
            for _ in range(WAITERS)
        ]
        daemon.wait_for(lambda: daemon.client.get("/pipelines/slow/stats").json()["runs"]["started"] == WAITERS,
                        timeout=60, what=f"{WAITERS} runs started")  # fmt: skip

        def still_waiting() -> None:
            done = [f for f in waiting if f.done()]
            assert not done, f"{len(done)} waiter(s) returned before the gate opened: {done[0].result().text}"

        control = httpx.Client(base_url=daemon.url, timeout=30)
        try:
            r = control.post("/reload")
            assert r.status_code == 200 and r.json()["unchanged"] == ["quick", "slow"], r.text
            still_waiting()
            assert control.get("/health").status_code == 200
            assert control.get("/stats").json()["pipelines"]["slow"]["runs"]["active"] == WAITERS
            r = control.post("/pipelines/quick/drain?wait=true&timeout=20")
            assert r.status_code == 200, r.text
            assert control.post("/pipelines/quick/start").status_code == 200
            r = control.post("/pipelines/quick/stages/make/trigger?wait=true&timeout=20")
            assert r.status_code == 200 and r.json()["state"] == "completed", r.text
            still_waiting()
        finally:
            control.close()
            gate.touch()
        answers = [f.result() for f in waiting]
    assert all(a.status_code == 200 and a.json()["state"] == "completed" for a in answers)
    assert daemon.stop() == 0
