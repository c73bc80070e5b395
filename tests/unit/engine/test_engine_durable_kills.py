"""`buffer = "disk"`: what a SIGKILL at an unlucky moment leaves, and how the next start reads it.

A kill leaves exactly what the writer had committed. In-process, that is a copy of the buffer
file (and its WAL) taken at the moment in question: a new book opened on the copy is the daemon
started again after `kill -9`.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import engine_stagefns as fns
import pytest
from engine_helpers import build_graph_for, finished_run, pipeline, stage, wait_for

from pipelined.config.spec import PipelineSpec
from pipelined.engine import PipelineBook, PipelineRuntime, buffer_ops, buffer_writer


def start(spec: PipelineSpec, book: PipelineBook) -> PipelineRuntime:
    rt = PipelineRuntime(spec, build_graph_for(spec), None, book, drain_timeout=5.0)
    rt.start()
    return rt


def killed_copy(state_dir: Path, into: Path) -> Path:
    """What a `kill -9` now would leave: the committed file (the WAL's index lives in memory:
    a new connection rebuilds it from the WAL)."""
    (into / "buffers").mkdir(parents=True)
    for name in ("p.sqlite3", "p.sqlite3-wal"):
        source = state_dir / "buffers" / name
        if source.exists():
            shutil.copy2(source, into / "buffers" / name)
    return into


def restarted(spec: PipelineSpec, state_dir: Path, run_id: str) -> dict[str, Any] | None:
    """Start `spec` on `state_dir`; the run `run_id` once it ended (None: the file had ended it)."""
    book = PipelineBook("p", state_dir)
    rt = start(spec, book)
    try:
        if book.runs.find(run_id) is None:
            return None
        return finished_run(rt, run_id)
    finally:
        rt.drain(5)
        book.close()


def test_a_producer_run_that_says_its_producer_returned_is_not_interrupted_by_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer's end-of-input mark goes in a group after its last items. A run that showed
    its producer as done (here: it ended `completed`) before that mark was on disk came back
    after a kill as "interrupted by a restart after 3 items" and ended `failed`. Now the run
    learns that its producer returned only once the mark is committed."""
    key = "durable-kill-producer"
    release = threading.Event()
    real_apply = buffer_writer.apply_group

    def slow_disk(conn: Any, ops: list[tuple[Any, ...]]) -> int:  # the mark's commit is slow
        if any(op[0] == buffer_ops.SOURCE_DONE for op in ops):
            release.wait(30)
        return real_apply(conn, ops)

    monkeypatch.setattr(buffer_writer, "apply_group", slow_disk)
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 3}, auto_start=False),
        stage("sink", "consumer", "collect", args={"key": key}),
        buffer="disk",
    )
    live = tmp_path / "live"
    book = PipelineBook("p", live)
    rt = start(spec, book)
    try:
        run_id = rt.trigger("src")
        # a kill at any moment the run is seen ended must find it ended after the restart;
        # while the mark cannot commit, it must not be seen ended at all
        moments = []
        if wait_for(lambda: book.runs.get(run_id)["state"] != "running", timeout=1.0):
            moments.append(killed_copy(live, tmp_path / "killed-before-the-mark"))
        release.set()
        assert finished_run(rt, run_id)["state"] == "completed"
        moments.append(killed_copy(live, tmp_path / "killed-after"))
    finally:
        release.set()
        rt.drain(5)
        book.close()
    assert sorted(fns.COLLECTED[key]) == [0, 1, 2]
    monkeypatch.undo()
    for state_dir in moments:
        run = restarted(spec, state_dir, run_id)
        assert run is None or (run["state"] == "completed" and run["error"] is None), (state_dir.name, run)
