"""A trigger racing the start of a drain (issue 15 item 12), forced many times at engine level.

The interleaving is forced: the trigger is paused right after it decided the pipeline takes it
(just before its run is registered) until the drain has finished or a short bound passed. Then
whatever happened must be one of the two honest outcomes: the trigger was refused (Conflict /
Unavailable) and left no run, or its run ends — never `running` for ever — and every injected
item either finished or was dead-lettered.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import engine_stagefns as fns
import pytest
from engine_helpers import build_graph_for, pipeline, stage, wait_for

from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.errors import Conflict, Unavailable

ITERATIONS = 100
DEADLINE_S = 90.0


def _spec(key: str):  # type: ignore[no-untyped-def]
    return pipeline(
        stage("src", "producer", "count_to", auto_start=False, args={"n": 3}),
        stage("work", call="inc"),
        stage("sink", "consumer", "collect", args={"key": key}),
    )


def _race(kind: str, iteration: int) -> tuple[str, dict[str, Any] | None, list[Any]]:
    """One forced race; (what the trigger got, its run when it got one, what the sink got)."""
    key = f"race-{kind}-{iteration}"
    spec = _spec(key)
    rt = PipelineRuntime(spec, build_graph_for(spec), None, PipelineBook(spec.name, None), drain_timeout=5.0)
    rt.start()
    new_run = rt._new_run
    mode = iteration % 3

    def paused_new_run(stage_name: str, priority: int = 0) -> Any:
        if mode == 0:  # until the drain finished (bounded: a correct runtime holds it off)
            wait_for(lambda: rt.state == "drained", timeout=0.1)
        elif mode == 1:  # until the drain began
            wait_for(lambda: rt.state != "running", timeout=0.1)
        else:
            time.sleep(random.uniform(0, 0.002))
        return new_run(stage_name, priority)

    rt._new_run = paused_new_run  # type: ignore[method-assign]
    answer: list[Any] = []

    def trigger() -> None:
        try:
            if kind == "producer":
                answer.append(rt.trigger("src"))
            else:
                answer.append(rt.trigger("work", items=[10, 20, 30]))
        except (Conflict, Unavailable) as exc:
            answer.append(exc)

    thread = threading.Thread(target=trigger)
    thread.start()
    time.sleep(random.uniform(0, 0.001))
    rt.begin_drain()
    thread.join(10)
    assert not thread.is_alive(), "trigger still blocked after 10 s"
    assert rt.wait_drained(15), f"{key}: not drained"
    got = answer[0]
    if not isinstance(got, str):
        assert rt.book.runs.list() == [], f"{key}: a refused trigger left a run"
        return "refused", None, list(fns.COLLECTED[key])
    assert rt.book.runs.wait(got, 5), f"{key}: run {got} still running: {rt.book.runs.get(got)}"
    return "accepted", rt.book.runs.get(got), list(fns.COLLECTED[key])


@pytest.mark.parametrize("kind", ["producer", "inject"])
def test_a_trigger_racing_the_start_of_a_drain_never_leaves_a_run_running(kind: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    outcomes: list[str] = []
    for i in range(ITERATIONS):
        if time.monotonic() > deadline:
            break
        outcome, run, sunk = _race(kind, i)
        outcomes.append(outcome)
        if run is None:
            assert sunk == []
            continue
        assert run["state"] in ("completed", "cancelled", "failed"), run
        items = run["items"]
        assert items["in_flight"] == 0, run
        # nothing lost: every item that entered finished at the sink or was dead-lettered
        assert items["finished"] + items["dead_lettered"] == items["produced"], run
        assert len(sunk) == items["finished"], (run, sunk)
        if kind == "inject":
            assert items["produced"] == 3 and sorted(sunk) == [11, 21, 31], (run, sunk)
    assert len(outcomes) >= 20, f"only {len(outcomes)} iterations within {DEADLINE_S} s"
