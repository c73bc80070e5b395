"""Retries, dead letters (memory and jsonl), on_error, thread death, producer errors."""

from __future__ import annotations

from pathlib import Path

import engine_stagefns as fns
import orjson
from engine_helpers import finished_run, hooks, pipeline, running, stage, wait_for

from pipelined.engine import PipelineBook


def test_retry_then_success_does_not_stall_other_items() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 20}, auto_start=False),
        stage("flaky", call="flaky", args={"key": "retry-ok", "fail_times": 2}, retry_backoff=0.01, max_retries=3),
        stage("sink", "consumer", "collect", args={"key": "retry-ok-out"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert sorted(fns.COLLECTED["retry-ok-out"]) == list(range(20))
        row = rt.stats()["stages"]["flaky"]
        assert row["items_failed"] == 40 and row["items_retried"] == 40
        assert row["items_in"] == 20 and row["items_dead_lettered"] == 0  # retries are not new items
        assert rt.book.dead_letters.list() == []


def test_retries_wait_on_a_timer_not_in_the_stage() -> None:
    # item 0 fails once with a long backoff; the other items pass through meanwhile
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 5}, auto_start=False),
        stage("flaky", call="flaky", args={"key": "timer", "fail_times": 1}, retry_backoff=0.3),
        stage("sink", "consumer", "collect", args={"key": "timer-out"}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        assert wait_for(lambda: rt.stats()["stages"]["flaky"]["items_failed"] == 5)
        assert rt.book.runs.get(run_id)["state"] == "running"
        assert finished_run(rt, run_id)["state"] == "completed"


def test_dead_letter_after_max_retries(tmp_path: Path) -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}, auto_start=False),
        stage("bad", call="always_fail", max_retries=2, retry_backoff=0.005,
              hooks=hooks(on_error="on_error_hook")),
        stage("sink", "consumer", "collect", args={"key": "never"}),
        hooks=hooks(on_error="on_error_hook"),
    )
    fns.CALLS["on_error"].clear()
    with running(spec, tmp_path) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed"
        assert run["items"]["dead_lettered"] == 3 and run["items"]["in_flight"] == 0
        assert "3 items were dead-lettered" in run["error"]
        letters = rt.book.dead_letters.list(10)
        assert len(letters) == 3
        assert {d["item"] for d in letters} == {0, 1, 2}
        assert all(d["attempts"] == 3 and d["stage"] == "bad" and d["run"] == run["run"] for d in letters)
        assert letters[0]["error"].startswith("ValueError: bad item")
        row = rt.stats()["stages"]["bad"]
        assert row["items_failed"] == 9 and row["items_retried"] == 6 and row["items_dead_lettered"] == 3
        # pipeline hook then stage hook, for each item
        assert len(fns.CALLS["on_error"]) == 6
        assert fns.CALLS["on_error"][0][2] == "bad"
    lines = (tmp_path / "dead-letters" / "p.jsonl").read_bytes().splitlines()
    assert len(lines) == 3
    assert set(orjson.loads(lines[0])) == {"id", "run", "stage", "at", "attempts", "error", "traceback", "item"}


def test_dead_letters_are_read_back_by_a_new_book(tmp_path: Path) -> None:
    book = PipelineBook("p", tmp_path)
    book.dead_letters.add("r-000001", "s", 4, "ValueError: x", {"a": 1})
    book.dead_letters.add("r-000002", "s", 1, "dropped", object())
    book.close()
    again = PipelineBook("p", tmp_path)
    letters = again.dead_letters.list(10)
    assert [d["run"] for d in letters] == ["r-000002", "r-000001"]
    assert letters[1]["item"] == {"a": 1}
    assert letters[0]["item"].startswith("<object object")
    assert again.dead_letters.list(1) == letters[:1]


def test_dead_letter_file_rotates(tmp_path: Path) -> None:
    from pipelined.engine.deadletters import DeadLetterStore

    store = DeadLetterStore("p", tmp_path, rotate_bytes=500)
    for i in range(20):
        store.add("r-1", "s", 1, "E: x", "x" * 50 + str(i))
    folder = tmp_path / "dead-letters"
    assert (folder / "p.jsonl.1").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["p.jsonl", "p.jsonl.1"]
    store.close()


def test_raising_on_error_is_ignored() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 2}, auto_start=False),
        stage("bad", "consumer", "always_fail", max_retries=0),
        hooks=hooks(on_error="failing_on_error"),
    )
    fns.CALLS["on_error_attempted"].clear()
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 2
        assert sorted(fns.CALLS["on_error_attempted"]) == [0, 1]


def test_unknown_emit_to_target_fails_the_attempt() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 1}, auto_start=False),
        stage("p1", call="emit_to_nowhere", max_retries=0),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed"
        [letter] = rt.book.dead_letters.list()
        assert "no_such_stage" in letter["error"]


def test_producer_that_raises_fails_its_run_but_items_finish() -> None:
    spec = pipeline(
        stage("src", "producer", "raise_after", args={"n": 3}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": "raiser"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed" and "RuntimeError: source broke" in run["error"]
        assert run["items"]["finished"] == 3
        assert sorted(fns.COLLECTED["raiser"]) == [0, 1, 2]


def test_dead_thread_is_replaced_and_its_item_retried() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 5}, auto_start=False),
        stage("mortal", call="die_once", args={"key": "death"}, retry_backoff=0.01),
        stage("sink", "consumer", "collect", args={"key": "death-out"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed"
        assert sorted(fns.COLLECTED["death-out"]) == [0, 1, 2, 3, 4]
        assert rt.stats()["stages"]["mortal"]["items_failed"] == 1
        assert wait_for(lambda: rt.stages["mortal"].live_workers() == 1)


def test_items_after_the_one_that_killed_the_thread_are_taken_once() -> None:
    spec = pipeline(
        stage("mortal", call="die_once", args={"key": "death-chunk"}, retry_backoff=0.01),
        stage("sink", "consumer", "collect", args={"key": "death-chunk-out"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("mortal", items=[0, 1, 2, 3, 4]))  # one chunk
        assert run["state"] == "completed"
        assert sorted(fns.COLLECTED["death-chunk-out"]) == [0, 1, 2, 3, 4]
        row = rt.stats()["stages"]["mortal"]
        # 5 items (a retry is not a new item); 3 and 4 went back to the queue uncalled, counted once
        assert (row["items_in"], row["items_failed"], row["items_retried"]) == (5, 1, 1)


def test_setup_failure_is_a_start_error_naming_the_stage() -> None:
    import pytest
    from engine_helpers import build_graph_for

    from pipelined.engine import PipelineRuntime
    from pipelined.errors import StartError

    spec = pipeline(
        stage("src", "producer", "count_to"),
        stage("broken", call="BrokenSetup"),
    )
    rt = PipelineRuntime(spec, build_graph_for(spec), None, PipelineBook("p", None))
    with pytest.raises(StartError, match="stage 'broken'.*no database"):
        rt.start()
    assert rt.state == "failed"


def test_a_setup_that_never_returns_is_a_start_error_after_the_timeout(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest
    from engine_helpers import build_graph_for

    from pipelined.engine import PipelineRuntime
    from pipelined.engine import stage as stage_module
    from pipelined.errors import StartError

    monkeypatch.setattr(stage_module, "SETUP_TIMEOUT_S", 0.3)
    spec = pipeline(
        stage("src", "producer", "count_to"),
        stage("stuck", call="HangingSetup"),
    )
    rt = PipelineRuntime(spec, build_graph_for(spec), None, PipelineBook("p", None))
    try:
        with pytest.raises(StartError, match="stage 'stuck'.*did not return within 0.3 s"):
            rt.start()
        assert rt.state == "failed"
    finally:
        fns.EVENTS["hanging-setup"].set()  # let the stuck thread go


def test_traceback_logged_at_the_first_failure_of_its_kind_then_summarised(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 1}, auto_start=False),
        stage("bad", "consumer", "always_fail", max_retries=3, retry_backoff=0.001),
    )
    with caplog.at_level(logging.ERROR, logger="pipelined.engine"), running(spec) as rt:
        run_id = rt.trigger("src")
        assert finished_run(rt, run_id)["state"] == "failed"
        (letter,) = rt.book.dead_letters.list(5)
    # the drain at the end of `running` writes the pending summary
    records = [r for r in caplog.records if getattr(r, "stage", None) == "bad"]
    first, summary = records
    assert first.getMessage().startswith("item failed on attempt 1: ValueError: bad item 0\nTraceback")
    assert (first.pipeline, first.stage, first.run) == ("p", "bad", run_id)  # type: ignore[attr-defined]
    assert summary.getMessage().startswith("stage 'bad': 3 more failed attempts in the last ")
    assert f"(1 dead-lettered); last: run {run_id}: ValueError: bad item 0" in summary.getMessage()
    assert "Traceback" not in summary.getMessage()
    assert letter["traceback"].startswith("Traceback") and "ValueError: bad item 0" in letter["traceback"]


def test_drop_oldest_between_stages_accounts_for_every_item() -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 200}, auto_start=False),
        stage("sink", "consumer", "collect_slowly", args={"key": "drop-between", "delay": 0.001},
              queue_size=5, on_full="drop_oldest"),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"))
        items = run["items"]
        assert items["dead_lettered"] > 0 and run["state"] == "failed"
        assert items["produced"] == 200 == items["finished"] + items["dead_lettered"]
        assert len(fns.COLLECTED["drop-between"]) == items["finished"]
        assert rt.stats()["stages"]["sink"]["items_dropped"] == items["dead_lettered"]


def test_auto_start_producer_whose_args_do_not_bind_cannot_start() -> None:
    import pytest
    from engine_helpers import build_graph_for

    from pipelined.engine import PipelineRuntime
    from pipelined.errors import StartError

    spec = pipeline(
        stage("src", "producer", "count_to", args={"nope": 1}),
        stage("sink", "consumer", "collect"),
    )
    rt = PipelineRuntime(spec, build_graph_for(spec), None, PipelineBook("p", None))
    with pytest.raises(StartError, match="stage 'src'.*'nope'"):
        rt.start()
    assert rt.state == "failed"
    assert wait_for(lambda: rt.live_workers() == (0, 0))
