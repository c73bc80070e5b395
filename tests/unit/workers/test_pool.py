"""The worker pool with real processes: outputs, kinds of callables, ctx, classes, recycling."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from pipelined.workers import ItemOutcome


def outputs(outcomes: list[ItemOutcome]) -> list[list[Any]]:
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    return [o.outputs for o in outcomes]


def test_batch_of_items_comes_back_in_order(started: Any) -> None:
    stage = started("double")
    assert stage.live_processes() == 2
    assert outputs(stage.process("run-1", list(range(1000)))) == [[n * 2] for n in range(1000)]
    assert stage.process("run-1", []) == []


def test_args_filters_generators_and_async(started: Any) -> None:
    assert outputs(started("add", args={"amount": 5}, processes=1).process("r", [1, 2])) == [[6], [7]]
    filtered = started("keep_even", processes=1).process("r", [1, 2])
    assert [(list(o.outputs), o.filtered) for o in filtered] == [([], True), ([2], False)]
    spread = started("spread", processes=1).process("r", [0, 3])
    assert [(o.outputs, o.filtered) for o in spread] == [([], True), ([0, 1, 2], False)]
    assert outputs(started("async_double", processes=1).process("r", [4])) == [[8]]
    assert outputs(started("async_spread", processes=1).process("r", [2])) == [[0, 1]]


def test_consumer_return_value_is_ignored(started: Any) -> None:
    outcome = started("double", kind="consumer", processes=1).process("r", [3])[0]
    assert (list(outcome.outputs), outcome.filtered, outcome.error) == ([], False, None)


def test_ctx_emit_and_emit_to(started: Any) -> None:
    first, unknown = started("router", processes=1).process("r", [1, 3])
    assert first.outputs == [("plain", 1)] and first.routed == [("sink", 1)]
    assert unknown.error is not None and "'nowhere'" in unknown.error and unknown.error.startswith("ValueError: ")
    assert unknown.outputs == [] and unknown.routed == []


def test_errors_come_back_as_text_and_only_fail_their_item(started: Any) -> None:
    stage = started("boom", processes=1)
    ok, bad, ok2 = stage.process("r", [1, 2, 3])
    assert ok.outputs == [1] and ok2.outputs == [3]
    assert bad.error == "ValueError: bad item 2"
    assert bad.traceback is not None and "in boom" in bad.traceback
    weird = started("raise_unpicklable", processes=1).process("r", [7])[0]
    assert weird.error is not None and weird.error.startswith("Unpicklable: 7")


def test_unpicklable_item_fails_alone_naming_stage_and_type(started: Any) -> None:
    stage = started("double", processes=1)
    result = stage.process("r", [1, lambda: 1, 3])
    assert result[0].outputs == [2] and result[2].outputs == [6]
    assert result[1].error is not None
    assert "stage 'work'" in result[1].error and "function" in result[1].error


def test_unpicklable_result_fails_alone(started: Any) -> None:
    result = started("lambda_result", processes=1).process("r", [0, 1, 2])
    assert result[0].outputs == [0] and result[2].outputs == [2]
    assert result[1].error is not None
    assert result[1].error.startswith("PicklingError: stage 'work': result of type function")


def test_item_that_does_not_unpickle_in_the_worker_fails_alone(started: Any) -> None:
    ghost = types.ModuleType("ghost_module_only_in_the_daemon")
    exec("class Ghost:\n    pass\n", ghost.__dict__)
    ghost.Ghost.__module__ = ghost.__name__
    sys.modules[ghost.__name__] = ghost
    try:
        result = started("pid_of", processes=1).process("r", [1, ghost.Ghost(), 2])
    finally:
        del sys.modules[ghost.__name__]
    assert result[0].error is None and result[2].error is None
    assert result[1].error is not None and "Ghost" in result[1].error and "stage 'work'" in result[1].error


def test_class_is_set_up_once_per_worker_and_closed_on_stop(started: Any, tmp_path: Path) -> None:
    record = tmp_path / "record"
    stage = started("Scorer", args={"record": str(record), "factor": 3}, processes=2)
    values = outputs(stage.process("r", [1, 2]))
    assert [v[0][0] for v in values] == [3, 6]
    stage.stop(5.0)
    lines = record.read_text().split()
    setups = lines[1::2][: lines.count("setup")]
    assert lines.count("setup") == 2 and lines.count("close") == 2
    assert sorted(p for e, p in zip(lines[::2], lines[1::2], strict=True) if e == "close") == sorted(setups)


def test_recycling_after_max_items_per_worker(started: Any, tmp_path: Path) -> None:
    record = tmp_path / "record"
    stage = started("Scorer", args={"record": str(record)}, processes=1, max_items_per_worker=3)
    pids = [o.outputs[0][1] for o in stage.process("r", list(range(7)))]
    assert len(set(pids[0:3])) == 1 and len(set(pids[3:6])) == 1 and pids[0] != pids[3] != pids[6]
    assert stage.live_processes() == 1
    events = record.read_text().split()[::2]
    assert events.count("close") == 2 and events.count("setup") == 3


def test_concurrent_callers_use_every_worker(started: Any) -> None:
    stage = started("slow", processes=2)
    results: list[list[ItemOutcome]] = []
    barrier = threading.Barrier(2)

    def call() -> None:
        barrier.wait()
        results.append(stage.process("r", [0.2]))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 2 and all(r[0].error is None for r in results)
    assert all(r[0].seconds >= 0.2 for r in results)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_start_methods(started: Any, method: str) -> None:
    stage = started("double", start_method=method, processes=1)
    assert outputs(stage.process("r", [21])) == [[42]]
