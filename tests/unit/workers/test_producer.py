"""A producer with `processes`: its run streams items back from a worker process."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pipelined.workers.outcome import ProducerFailed


def test_items_stream_back_from_a_worker(started: Any) -> None:
    stage = started("count_up", kind="producer", processes=1)
    items = list(stage.produce("run-1", {"n": 1000}))
    assert [i for i, _ in items] == list(range(1000))
    assert {pid for _, pid in items} != {os.getpid()} and len({pid for _, pid in items}) == 1


def test_a_raising_producer_fails_its_run_after_its_items(started: Any) -> None:
    stage = started("count_up", kind="producer", processes=1)
    seen: list[Any] = []
    with pytest.raises(ProducerFailed) as caught:
        seen.extend(stage.produce("run-1", {"n": 10, "fail_at": 3}))
    assert [i for i, _ in seen] == [0, 1, 2]
    assert caught.value.error == "RuntimeError: producer broke at 3"
    assert caught.value.traceback and "count_up" in caught.value.traceback
    assert [i for i, _ in stage.produce("run-2", {"n": 2})] == [0, 1]  # the worker carries on


def test_closing_the_iterator_stops_the_producer(started: Any) -> None:
    stage = started("endless", kind="producer", processes=1)
    run = stage.produce("run-1", {})
    assert next(run) == 0
    run.close()
    assert stage.live_processes() == 1
    assert [i for i, _ in started("count_up", kind="producer", processes=1).produce("r", {"n": 1})] == [0]
    second = stage.produce("run-2", {})
    assert next(second) == 0  # ctx.stopping was reset for the next run
    second.close()


def test_emit_to_from_a_producer_goes_to_the_sink(started: Any) -> None:
    routed: list[tuple[str, Any]] = []
    stage = started("route_from_producer", kind="producer", processes=1)
    assert list(stage.produce("r", {}, lambda s, i: routed.append((s, i)))) == ["plain"]
    assert routed == [("sink", "routed")]


def test_stop_does_not_wait_forever_for_a_run_nobody_closes(started: Any) -> None:
    import time

    from .conftest import new_children

    stage = started("endless", kind="producer", processes=1)
    run = stage.produce("run-1", {})
    assert next(run) == 0  # suspended, never closed: its worker is held
    began = time.monotonic()
    stage.stop(0.2)
    assert time.monotonic() - began < 5
    assert stage.live_processes() == 0
    run.close()
    assert new_children() == []
