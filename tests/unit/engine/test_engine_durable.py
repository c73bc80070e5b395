"""The engine with `buffer = "disk"` (real SQLite files): acknowledgement end to end, items left
at a drain deadline taken over by the next version or start, a reload removing a stage, items
that cannot be stored, a corrupt file; and ctx.item_id / ctx.attempt in every pipeline."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import durable_stagefns as dfns
import engine_stagefns as fns
import pytest
from engine_helpers import build_graph_for, finished_run, pipeline, running, stage, wait_for

from pipelined.config.spec import PipelineSpec
from pipelined.engine import PipelineBook, PipelineRuntime
from pipelined.errors import BadRequest, StartError

D = "durable_stagefns"


def start(spec: PipelineSpec, book: PipelineBook, drain_timeout: float = 5.0) -> PipelineRuntime:
    rt = PipelineRuntime(spec, build_graph_for(spec), None, book, drain_timeout=drain_timeout)
    rt.start()
    return rt


def stored_items(book: PipelineBook) -> int:
    assert book.buffer is not None
    assert book.buffer.flush(10)
    return int(book.buffer.stats()["items"])


def test_everything_derived_from_an_entry_finishes_before_it_leaves_the_buffer(tmp_path: Path) -> None:
    key = "durable-flow"
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 3000}, auto_start=False, to=("a", "b"), fanout="broadcast"),
        stage("a", call="inc", threads=2, to=("batch",)),
        stage("b", call="evens", to=("batch",)),
        stage("batch", "accumulator", max_size=7),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
    )
    with running(spec, tmp_path) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "completed" and run["recovered"] is False
        assert run["items"]["produced"] == 3000
        assert sum(len(b) for b in fns.COLLECTED[key]) == 3000 + 1500
        assert stored_items(rt.book) == 0
        buffer = rt.stats()["buffer"]
        assert buffer["kind"] == "disk" and buffer["error"] is None and buffer["bytes"] > 0
    assert (tmp_path / "buffers" / "p.sqlite3").exists()  # kept (empty) across versions


def test_a_trigger_is_answered_after_its_items_are_stored(tmp_path: Path) -> None:
    key = "durable-trigger"
    spec = pipeline(
        stage("work", call=f"{D}:hold", args={"key": key}),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
    )
    with running(spec, tmp_path) as rt:
        run_id = rt.trigger("work", items=list(range(2500)))  # three rows
        rows = rt.book.buffer._writer.read(lambda c: c.execute("SELECT run, count FROM entries").fetchall())
        assert rows == [(run_id, 1024), (run_id, 1024), (run_id, 452)]  # on disk when trigger() returned
        dfns.GATES[key].set()
        assert finished_run(rt, run_id)["state"] == "completed"
        assert stored_items(rt.book) == 0


def strand(tmp_path: Path, key: str, spec: PipelineSpec, book: PipelineBook, trigger: dict[str, Any]) -> str:
    """Start `spec`, trigger, let `key`'s gate hold the items, drain past the deadline: they stay stored."""
    rt = start(spec, book)
    run_id = rt.trigger(**trigger)
    wanted = len(trigger.get("items", ())) or 20
    assert wait_for(lambda: book.runs.get(run_id)["items"]["produced"] == wanted)  # all entered
    assert wait_for(lambda: not any(p._producing for p in rt.producers.values()))  # and its producer done
    assert wait_for(lambda: rt.stats()["stages"]["work"]["items_in"] > 0)
    rt.drain(0.2)
    assert rt.state == "drained"
    assert book.runs.get(run_id)["state"] == "running"  # waits for the next version
    dfns.GATES[key].set()  # the stuck call returns; its result is discarded
    return run_id


def held_pipeline(key: str, **extra: Any) -> PipelineSpec:
    return pipeline(
        stage("src", "producer", "count_to", args={"n": 20}, auto_start=False),
        stage("work", call=f"{D}:hold", args={"key": key}),
        stage("rec", call=f"{D}:record_ctx", args={"key": key}),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
        **extra,
    )


def test_what_a_drain_deadline_leaves_is_taken_over_by_the_next_version(tmp_path: Path) -> None:
    key = "durable-takeover"
    book = PipelineBook("p", tmp_path)
    spec = held_pipeline(key)
    run_id = strand(tmp_path, key, spec, book, {"stage": "src"})
    assert stored_items(book) == 20
    rt = start(spec, book)
    try:
        run = finished_run(rt, run_id)
        assert run["state"] == "completed", run
        assert run["items"] == {"produced": 20, "in_flight": 0, "finished": 20, "filtered": 0, "dead_lettered": 0}
        assert sorted(fns.COLLECTED[key]) == list(range(20))  # the held item's late result was discarded
        assert {attempt for _, _, attempt in dfns.SEEN[key]} == {2}  # replayed once
        assert sorted(item_id for _, item_id, _ in dfns.SEEN[key]) == sorted(f"{run_id}.{n}" for n in range(1, 21))
        assert stored_items(book) == 0
    finally:
        rt.drain(5)
        book.close()


def test_after_a_restart_runs_come_back_recovered_and_new_ids_continue(tmp_path: Path) -> None:
    key = "durable-restart"
    spec = held_pipeline(key)
    book = PipelineBook("p", tmp_path)
    run_id = strand(tmp_path, key, spec, book, {"stage": "src"})
    book.close()  # the daemon stops; a new one starts with a fresh book
    book = PipelineBook("p", tmp_path)
    rt = start(spec, book)
    try:
        run = finished_run(rt, run_id)
        assert run["recovered"] is True and run["state"] == "completed"
        assert run["items"]["produced"] == 20 and run["items"]["finished"] == 20
        new_id = rt.trigger("work", items=[99])
        assert int(new_id[2:]) > int(run_id[2:])  # never the recovered run's id
        assert stored_items(book) <= 1
    finally:
        rt.drain(5)
        book.close()


@pytest.mark.parametrize("kind", ["inject", "link"])
def test_a_trigger_killed_after_its_202_before_its_end_of_input_was_stored_still_completes(
    tmp_path: Path, kind: str
) -> None:
    """A trigger's items are stored in one commit and its 202 follows it; the "no more items"
    mark of the run goes in a later group. A SIGKILL between the two must not bring the run
    back as "interrupted by a restart" (a trigger is not a producer): it completes. So does a
    linked run, whose first delivery is stored before the sending pipeline hears it was taken."""
    from pipelined.engine.disk_buffer import DiskBuffer

    key = f"durable-{kind}-mark"
    parent = "up/r-000001" if kind == "link" else None
    buffer = DiskBuffer.for_pipeline(tmp_path, "p")
    buffer.begin_run("r-000003", "work", kind, "2026-01-01T00:00:00+00:00", parent=parent)
    assert buffer.append("r-000003", "work", "in", 1, [1, 2, 3])[1].wait(10)
    buffer.close()  # what a kill leaves: the items and the run, without source_done
    spec = pipeline(
        stage("work", call="passthrough"),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
    )
    book = PipelineBook("p", tmp_path)
    rt = start(spec, book)
    try:
        run = finished_run(rt, "r-000003")
        assert run["recovered"] is True and run["error"] is None and run["state"] == "completed", run
        assert run["parent"] == parent
        assert sorted(fns.COLLECTED[key]) == [1, 2, 3]
    finally:
        rt.drain(5)
        book.close()


def test_items_at_a_stage_the_new_version_removed_are_dead_lettered(tmp_path: Path) -> None:
    key = "durable-removed"
    book = PipelineBook("p", tmp_path)
    run_id = strand(tmp_path, key, held_pipeline(key), book, {"stage": "work", "items": [1, 2, 3]})
    without_work = pipeline(
        stage("src", "producer", "count_to", auto_start=False),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
    )
    rt = start(without_work, book)
    try:
        run = finished_run(rt, run_id)
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 3
        letters = book.dead_letters.list()
        assert sorted(d["item"] for d in letters) == [1, 2, 3]
        assert {(d["stage"], d["error"]) for d in letters} == {("work", "stage removed by reload")}
        assert stored_items(book) == 0
    finally:
        rt.drain(5)
        book.close()


def test_deleting_the_pipeline_dead_letters_what_is_stored_and_removes_the_file(tmp_path: Path) -> None:
    key = "durable-delete"
    book = PipelineBook("p", tmp_path)
    strand(tmp_path, key, held_pipeline(key), book, {"stage": "work", "items": ["x", "y"]})
    assert book.discard_buffer() == 2
    assert sorted((d["item"], d["error"]) for d in book.dead_letters.list()) == [("x", "shutdown"), ("y", "shutdown")]
    assert not (tmp_path / "buffers" / "p.sqlite3").exists()
    book.close()


def test_an_item_that_cannot_be_stored_is_dead_lettered_at_its_producer(tmp_path: Path) -> None:
    key = "durable-unpicklable"
    spec = pipeline(
        stage("src", "producer", f"{D}:with_unpicklable", args={"n": 4}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
    )
    with running(spec, tmp_path) as rt:
        run = finished_run(rt, rt.trigger("src"))
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 1
        assert sorted(fns.COLLECTED[key]) == [1, 2, 3, 4]
        [letter] = rt.book.dead_letters.list()
        assert letter["stage"] == "src"
        assert letter["error"].startswith("item of type lock cannot be saved in the disk buffer: TypeError")
        with pytest.raises(BadRequest, match=r"stage 'sink': items\[1\]: item of type lock cannot be saved"):
            rt.trigger("sink", items=[1, threading.Lock()])
        assert stored_items(rt.book) == 0


def test_a_corrupt_buffer_fails_the_start_and_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "buffers" / "p.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"garbage " * 1000)
    spec = held_pipeline("durable-corrupt")
    book = PipelineBook("p", tmp_path)
    with pytest.raises(StartError, match=r"pipeline 'p': disk buffer: .*p\.sqlite3: not a buffer file.*kept as p\.sqlite3\.corrupt-"):
        start(spec, book)
    assert not path.exists() and len(list(path.parent.glob("p.sqlite3.corrupt-*"))) == 1
    rt = start(spec, book)  # the next start begins with an empty buffer
    rt.drain(5)
    book.close()


# -- ctx.item_id and ctx.attempt, buffered or not ------------------------------------------------
@pytest.mark.parametrize("buffer", ["memory", "disk"])
def test_item_ids_follow_items_through_filters_retries_and_batches(tmp_path: Path, buffer: str) -> None:
    key = f"ids-{buffer}"
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 10}, auto_start=False),
        stage("keep", call="evens"),  # a plain function: no ctx, but the numbers go along
        stage("retry", call=f"{D}:fail_first", args={"key": key + "-retry"}, retry_backoff=0.01),
        stage("rec", call=f"{D}:record_ctx", args={"key": key}, to=("batch",)),
        stage("batch", "accumulator", max_size=5),
        stage("last", call=f"{D}:record_ctx", args={"key": key + "-batch"}),
        buffer=buffer,
    )
    with running(spec, tmp_path) as rt:
        run_id = rt.trigger("src")
        assert finished_run(rt, run_id)["state"] == "completed"
    seen = sorted(dfns.SEEN[key])
    assert seen == [(x, f"{run_id}.{x + 1}", 1) for x in (0, 2, 4, 6, 8)]  # item x was the (x+1)-th produced
    attempts = sorted(dfns.SEEN[key + "-retry"])
    assert attempts == sorted([(x, f"{run_id}.{x + 1}", 1) for x in (0, 2, 4, 6, 8)]
                              + [(x, f"{run_id}.{x + 1}", 2) for x in (0, 2, 4, 6, 8)])
    [(batch, batch_id, _)] = dfns.SEEN[key + "-batch"]
    assert batch_id == f"{run_id}.{batch[0] + 1}"  # a batch has its first item's id


@pytest.mark.parametrize("mode", ["pool", "fork_per_item"])
@pytest.mark.parametrize("buffer", ["memory", "disk"])
def test_a_process_stage_sees_item_ids_and_attempts(tmp_path: Path, buffer: str, mode: str) -> None:
    """config.md, Callables: ctx.item_id and ctx.attempt for every callable with ctx — in a
    worker process too (`processes = N`), the same ids a thread stage sees."""
    seen, passed = tmp_path / "seen.jsonl", tmp_path / "passed.jsonl"
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 6}, auto_start=False),
        stage("proc", call=f"{D}:record_ctx_to_file", args={"path": str(seen), "fail_first": True},
              processes=2, process_mode=mode, start_method="fork", retry_backoff=0.01),
        stage("after", call=f"{D}:record_ctx_to_file", args={"path": str(passed)}),
        buffer=buffer,
    )
    with running(spec, tmp_path) as rt:
        run_id = rt.trigger("src")
        assert finished_run(rt, run_id)["state"] == "completed"
    rows = sorted(tuple(json.loads(line)) for line in seen.read_text().splitlines())
    assert rows == sorted([(x, f"{run_id}.{x + 1}", a) for x in range(6) for a in (1, 2)])
    after = sorted(tuple(json.loads(line)) for line in passed.read_text().splitlines())
    assert after == [(x, f"{run_id}.{x + 1}", 1) for x in range(6)]  # what a process emits keeps its id


@pytest.mark.parametrize("call", ["slow_at", "slow_at_ctx"])
def test_outputs_routed_before_a_slow_item_of_their_chunk_keep_their_item_ids(tmp_path: Path, call: str) -> None:
    """Item numbers are tracked (a ctx stage downstream); a slow item in a chunk: the outputs of
    the items before it go on at once (lateoutputs.py), each with its own item's number — with a
    plain function (map() results, filtered ones skipped) and with a ctx one."""
    key = f"early-ids-{call}"
    n, at = 200, 150
    spec = pipeline(
        stage("work", call=f"{D}:{call}", args={"key": key, "at": at}),
        stage("rec", "consumer", f"{D}:record_ctx", args={"key": key}),
    )
    kept = [x for x in range(n) if x % 7 != 3]
    with running(spec, tmp_path) as rt:
        assert rt.gate.track_ids
        try:
            run_id = rt.trigger("work", items=list(range(n)))
            before = {x for x in kept if x < at}
            # while item `at` is held, everything before it got through
            assert wait_for(lambda: before <= {x for x, _, _ in dfns.SEEN[key]}), sorted(dfns.SEEN[key])[-5:]
            assert at not in {x for x, _, _ in dfns.SEEN[key]}
        finally:
            dfns.GATES[key].set()
        run = finished_run(rt, run_id)
    assert run["state"] == "completed" and run["items"]["finished"] == len(kept), run
    assert sorted(dfns.SEEN[key]) == [(x, f"{run_id}.{x + 1}", 1) for x in kept]


def test_a_pipeline_without_ctx_stages_tracks_no_ids(tmp_path: Path) -> None:
    spec = pipeline(stage("src", "producer", "count_to", auto_start=False), stage("sink", "consumer", "collect"))
    with running(spec, tmp_path) as rt:
        assert rt.gate.track_ids is False and rt.gate.buffer is None


# -- tail_file offsets follow the items ------------------------------------------------------------
@pytest.mark.parametrize("buffer", ["memory", "disk"])
def test_tail_file_saves_an_offset_only_once_its_lines_are_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffer: str
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("PIPELINED_STATE_DIR", str(state))
    state.mkdir(parents=True, exist_ok=True)
    log = state / "app.log"  # built-in file stages read only under their roots (the state dir)
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    key = f"tail-offsets-{buffer}"
    spec = pipeline(
        stage("src", "producer", "pipelined.stages:tail_file", auto_start=False,
              args={"path": str(log), "start": "beginning", "poll_interval": "20ms"}),
        stage("work", call=f"{D}:hold", args={"key": key}),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer=buffer,
    )
    offset_file = state / "tail" / "p-src.offset"

    def saved() -> int:
        text = offset_file.read_text().split() if offset_file.exists() else []
        return int(text[1]) if text else 0

    with running(spec, state) as rt:
        run_id = rt.trigger("src")
        # (the last line read may wait in the producer's slice until another line comes)
        assert wait_for(lambda: rt.book.runs.get(run_id)["items"]["produced"] >= 9)
        assert wait_for(lambda: rt.stats()["stages"]["work"]["items_in"] > 0)
        if buffer == "memory":  # nothing finished yet: a kill -9 now must read every line again
            assert saved() == 0
        else:  # in the disk buffer: the offset moves on (the buffer replays those lines)
            assert wait_for(lambda: saved() >= len("".join(f"line {i}\n" for i in range(8))))
        dfns.GATES[key].set()
        produced = rt.book.runs.get(run_id)["items"]["produced"]
        assert wait_for(lambda: len(fns.COLLECTED[key]) == produced), (fns.COLLECTED[key], produced)
        delivered = len("".join(f"line {i}\n" for i in range(produced)))
        last = len(f"line {produced - 1}\n")
        # up to the lines delivered, never past them (the last one's offset is registered when the
        # generator is resumed for the next line, so it waits for that line's slice)
        assert wait_for(lambda: delivered - last <= saved() <= delivered), (saved(), delivered)


def test_a_memory_version_replays_what_a_disk_version_stored_then_removes_the_file(tmp_path: Path) -> None:
    key = "durable-to-memory"
    book = PipelineBook("p", tmp_path)
    run_id = strand(tmp_path, key, held_pipeline(key), book, {"stage": "work", "items": [1, 2, 3]})
    memory = pipeline(*held_pipeline(key).stages)  # the same stages, buffer = "memory"
    rt = start(memory, book)
    try:
        assert finished_run(rt, run_id)["state"] == "completed"
        assert sorted(fns.COLLECTED[key]) == [1, 2, 3]
        assert wait_for(lambda: not (tmp_path / "buffers" / "p.sqlite3").exists())
        assert rt.stats()["buffer"]["kind"] == "memory"
    finally:
        rt.drain(5)
        book.close()
