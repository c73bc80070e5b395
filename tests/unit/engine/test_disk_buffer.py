"""The disk buffer's store (engine/disk_buffer.py) on real SQLite files: group commit, acks,
replay after a real crash of a writing process, corrupt files, unserializable items, stats."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelined.engine.buffer_file import BufferCorrupt, BufferOpenError
from pipelined.engine.disk_buffer import (
    MAX_ROW_ITEMS,
    BufferFailed,
    BufferUnavailable,
    DiskBuffer,
    RestoreFailed,
    Unserializable,
)

RUN = "r-000007"


@pytest.fixture
def buf(tmp_path: Path) -> Any:
    buffer = DiskBuffer.for_pipeline(tmp_path, "p")
    yield buffer
    buffer.close()


ROWS = "SELECT id, run, stage, kind, first, count, replays FROM entries ORDER BY id"


def rows_in_file(path: Path) -> list[tuple[Any, ...]]:
    """The entries of a closed buffer file (an open one is locked: see stored_rows)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(ROWS).fetchall()
    finally:
        conn.close()


def stored_rows(buffer: DiskBuffer) -> list[tuple[Any, ...]]:
    return list(buffer._writer.read(lambda c: c.execute(ROWS).fetchall()))


def hold_writer(buffer: DiskBuffer) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Keep the writer thread busy (inside a read) until `release` is set."""
    inside, release = threading.Event(), threading.Event()

    def blocking_read(conn: sqlite3.Connection) -> None:
        inside.set()
        release.wait(10)

    reader = threading.Thread(target=buffer._writer.read, args=(blocking_read,))
    reader.start()
    assert inside.wait(10)
    return inside, release, reader


# -- writing and acknowledging -----------------------------------------------------------------
def test_appended_items_are_stored_and_read_back_in_order(buf: DiskBuffer, tmp_path: Path) -> None:
    buf.begin_run(RUN, "src", "producer", "2026-01-01T00:00:00+00:00")
    rows, commit = buf.append(RUN, "src", "out", 1, [{"n": 1}, [2, 3], "four"])
    assert commit.wait(10)
    rows2, commit2 = buf.append(RUN, "src", "out", 4, [5])
    assert commit2.wait(10)
    buf.close()
    reopened = DiskBuffer.for_pipeline(tmp_path, "p")
    try:
        up_to = reopened.begin_replay()
        entries = list(reopened.entries(up_to))
        assert [(e.id, e.first, e.count, e.replays) for e in entries] == [
            (rows[0][0], 1, 3, 1), (rows2[0][0], 4, 1, 1)]
        assert entries[0].items() == [{"n": 1}, [2, 3], "four"]
        [run] = reopened.stored_runs()
        assert (run.run, run.stage, run.kind, run.produced, run.pending_items, run.source_done) == (
            RUN, "src", "producer", 4, 4, False)
        assert reopened.next_run == 8  # run ids continue after the stored ones
    finally:
        reopened.close()


def test_a_large_group_is_cut_into_rows_of_consecutive_items(buf: DiskBuffer) -> None:
    items = list(range(2 * MAX_ROW_ITEMS + 5))
    rows, commit = buf.append(RUN, "acc", "in", 1, items)
    assert commit.wait(10)
    assert [count for _, count in rows] == [MAX_ROW_ITEMS, MAX_ROW_ITEMS, 5]
    entries = list(buf.entries(rows[-1][0]))
    assert [e.first for e in entries] == [1, MAX_ROW_ITEMS + 1, 2 * MAX_ROW_ITEMS + 1]
    assert [x for e in entries for x in e.items()] == items


def test_ack_deletes_the_entry_and_adds_the_counters_to_its_run(buf: DiskBuffer) -> None:
    buf.begin_run(RUN, "src", "producer", "t")
    (first, _), = buf.append(RUN, "src", "out", 1, list(range(10)))[0]
    (second, _), = buf.append(RUN, "src", "out", 11, list(range(5)))[0]
    assert buf.flush(10)
    buf.ack(first, 10, RUN, finished=7, filtered=2, dead_lettered=1, last_error="stage 'x': boom")
    assert buf.flush(10)
    assert [row[0] for row in stored_rows(buf)] == [second]
    [run] = buf.stored_runs()
    assert (run.finished, run.filtered, run.dead_lettered, run.last_error, run.pending_items) == (
        7, 2, 1, "stage 'x': boom", 5)
    assert buf.stats()["items"] == 5


def test_source_done_and_end_run_are_stored(buf: DiskBuffer) -> None:
    buf.begin_run(RUN, "src", "producer", "t")
    buf.source_done(RUN, "producer raised ValueError: no")
    assert buf.flush(10)
    [run] = buf.stored_runs()
    assert run.source_done and run.error == "producer raised ValueError: no"
    buf.end_run(RUN)
    assert buf.flush(10)
    assert buf.stored_runs() == []


def test_everything_queued_while_the_writer_is_busy_is_one_group_commit(buf: DiskBuffer) -> None:
    _, release, reader = hold_writer(buf)
    before = buf._writer.commits
    commits = [buf.append(RUN, "src", "out", i * 10 + 1, list(range(10)))[1] for i in range(50)]
    assert not commits[0].done  # nothing committed while the writer is held
    release.set()
    reader.join(10)
    assert all(c.wait(10) for c in commits)
    assert len({id(c) for c in commits}) == 1  # they all joined one group
    assert buf._writer.commits - before == 1
    assert buf.stats()["items"] == 500
    assert len(stored_rows(buf)) == 50


def test_an_entry_acked_in_the_group_that_appends_it_is_never_written(buf: DiskBuffer) -> None:
    changes = buf._writer.read(lambda c: c.total_changes)
    _, release, reader = hold_writer(buf)
    rows, commit = buf.append(RUN, "src", "out", 1, [1, 2, 3])
    buf.ack(rows[0][0], 3)
    release.set()
    reader.join(10)
    assert commit.wait(10)
    assert buf._writer.read(lambda c: c.total_changes) == changes  # no row written nor deleted
    assert buf.stats()["items"] == 0


def test_commits_from_many_threads_are_all_stored(buf: DiskBuffer, tmp_path: Path) -> None:
    stored: list[int] = []
    lock = threading.Lock()

    def producer(k: int) -> None:
        for i in range(200):
            rows, commit = buf.append(f"r-{k:06d}", "src", "out", i + 1, [(k, i)])
            assert commit.wait(10)
            with lock:
                stored.append(rows[0][0])

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert buf._writer.commits < 800  # grouped: fewer commits than appends
    buf.close()
    assert sorted(stored) == [row[0] for row in rows_in_file(tmp_path / "buffers" / "p.sqlite3")]


# -- a process that crashes while writing ------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import os, sys
    from pipelined.engine.disk_buffer import DiskBuffer
    buf = DiskBuffer.for_pipeline(sys.argv[1], "p", sync=sys.argv[3])
    buf.begin_run("r-000001", "src", "producer", "t")
    k = 0
    while True:
        k += 1
        rows, commit = buf.append("r-000001", "src", "out", k * 10 - 9, list(range(k * 10 - 9, k * 10 + 1)))
        commit.wait()
        print("committed", rows[0][0], flush=True)
        if k % 2 == 0:
            buf.ack(rows[0][0], 10, "r-000001", finished=10)
            buf.flush()
            print("acked", rows[0][0], flush=True)
        if sys.argv[2] == "exit" and k == 40:
            os._exit(0)   # no close(): the WAL is left as a crash leaves it
    """
)


@pytest.mark.parametrize(("how", "sync"), [("sigkill", "normal"), ("exit", "normal"), ("sigkill", "full")])
def test_after_a_crash_every_committed_unacknowledged_entry_is_there(tmp_path: Path, how: str, sync: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), how, sync], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    committed: set[int] = set()
    acked: set[int] = set()
    for line in child.stdout:
        what, entry = line.split()
        (committed if what == "committed" else acked).add(int(entry))
        if how == "sigkill" and len(committed) >= 30:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(30)
    assert committed
    buf = DiskBuffer.for_pipeline(tmp_path, "p")  # recovers the WAL the crash left
    try:
        entries = {e.id: e for e in buf.entries(buf.begin_replay())}
        # the child acks every second entry right after its commit line: the last such ack may
        # have been committed before the kill without its "acked" line having been read
        last = max(committed)
        in_flight_ack = {last} if last % 2 == 0 and last not in acked else set()
        for entry_id in committed - acked - in_flight_ack:
            assert entry_id in entries, f"committed entry {entry_id} lost"
        for entry_id in acked:
            assert entry_id not in entries, f"acknowledged entry {entry_id} replayed"
        for entry in entries.values():  # an entry past the last line read is complete too
            assert entry.items() == list(range(entry.first, entry.first + 10))
            assert entry.replays == 1
        [run] = buf.stored_runs()
        assert run.produced >= 10 * len(committed)
        if how == "exit":
            assert run.finished == 10 * len(acked) and run.produced == 10 * len(committed)
        else:  # acks after the last line read may have been committed too
            assert run.finished >= 10 * len(acked)
    finally:
        buf.close()


# -- files that are not right ------------------------------------------------------------------
def test_a_file_that_is_not_a_database_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "buffers" / "p.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is no sqlite file at all" * 400)
    with pytest.raises(BufferCorrupt) as caught:
        DiskBuffer.for_pipeline(tmp_path, "p")
    message = str(caught.value)
    assert str(path) in message and "kept as p.sqlite3.corrupt-" in message
    kept = caught.value.kept_at
    assert kept is not None and kept.read_bytes().startswith(b"this is no sqlite file")
    assert not path.exists()
    fresh = DiskBuffer.for_pipeline(tmp_path, "p")  # the next start begins an empty buffer
    try:
        assert fresh.stats()["items"] == 0
    finally:
        fresh.close()


def test_a_damaged_database_fails_its_check_and_is_kept_aside_with_its_wal(tmp_path: Path) -> None:
    buf = DiskBuffer.for_pipeline(tmp_path, "p")
    buf.append(RUN, "src", "out", 1, ["x" * 3000 for _ in range(400)])[1].wait(10)
    buf.close()
    path = buf.path
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, page):  # scribble over every page header but the first two
        data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(BufferCorrupt) as caught:
        DiskBuffer.for_pipeline(tmp_path, "p")
    assert "integrity check" in str(caught.value)
    assert caught.value.kept_at is not None and caught.value.kept_at.read_bytes() == bytes(data)


def test_a_second_opener_of_the_same_file_is_refused(buf: DiskBuffer, tmp_path: Path) -> None:
    with pytest.raises(BufferOpenError, match="in use by another process"):
        DiskBuffer.for_pipeline(tmp_path, "p")
    buf.append(RUN, "src", "out", 1, [1])[1].wait(10)  # the first one is unharmed


def test_an_unknown_sync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="buffer_sync: expected one of normal, full, got 'fast'"):
        DiskBuffer.for_pipeline(tmp_path, "p", sync="fast")


# -- items -------------------------------------------------------------------------------------
class RaisesOnPickle:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> Any:
        raise self.exc


@dataclass
class Point:
    x: int
    y: int


class NumpyLike:
    """`==` returns an array-like, never a bool (numpy's habit)."""

    def __init__(self, values: list[int]) -> None:
        self.values = values

    def __eq__(self, other: object) -> Any:  # type: ignore[override]
        return [True] * len(self.values)

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("bad", "type_name"),
    [
        (lambda: 1, "function"),
        (threading.Lock(), "lock"),
        (RaisesOnPickle(SystemExit(3)), "RaisesOnPickle"),
        (RaisesOnPickle(KeyboardInterrupt()), "RaisesOnPickle"),
        (RaisesOnPickle(StopIteration()), "RaisesOnPickle"),
    ],
)
def test_an_item_that_cannot_be_pickled_is_named_and_nothing_is_queued(
    buf: DiskBuffer, bad: Any, type_name: str
) -> None:
    with pytest.raises(Unserializable) as caught:
        buf.append(RUN, "src", "out", 1, [1, 2, bad, 4])
    assert caught.value.index == 2
    assert str(caught.value).startswith(f"item of type {type_name} cannot be saved in the disk buffer: ")
    assert str(caught.value).count("cannot be saved") == 1
    assert buf.flush(10)
    assert buf.stats()["items"] == 0


def test_a_deeply_nested_item_is_refused_with_its_type(buf: DiskBuffer) -> None:
    deep: list[Any] = []
    for _ in range(200_000):
        deep = [deep]
    with pytest.raises(Unserializable, match="item of type list cannot be saved.*RecursionError"):
        buf.append(RUN, "src", "out", 1, [deep])


def test_real_user_values_round_trip(buf: DiskBuffer) -> None:
    huge = {"blob": b"\x00" * (3 * 1024 * 1024), "text": "é" * 100_000}
    items = [Point(1, 2), NumpyLike([1, 2]), huge, None, float("nan"), {1, 2}, (1, "a")]
    rows, commit = buf.append(RUN, "src", "out", 1, items)
    assert commit.wait(10)
    [entry] = buf.entries(rows[-1][0])
    restored = entry.items()
    assert restored[0] == Point(1, 2) and restored[1].values == [1, 2] and restored[2] == huge
    assert restored[3] is None and restored[5] == {1, 2} and restored[6] == (1, "a")


def test_an_entry_whose_class_is_gone_cannot_be_restored(buf: DiskBuffer, tmp_path: Path) -> None:
    module = tmp_path / "vanishing_items.py"
    module.write_text("class Gone:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_items  # type: ignore[import-not-found]

        rows, commit = buf.append(RUN, "src", "out", 1, [vanishing_items.Gone()])
        assert commit.wait(10)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_items", None)
    [entry] = buf.entries(rows[0][0])
    with pytest.raises(RestoreFailed, match=r"buffered entry \d+ \(run r-000007, stage 'src', 1 items\) cannot be restored: ModuleNotFoundError"):
        entry.items()


def test_refusing_appends_while_unavailable(buf: DiskBuffer) -> None:
    buf._writer.error = "disk buffer unavailable: database or disk is full"
    with pytest.raises(BufferUnavailable, match="database or disk is full"):
        buf.append(RUN, "src", "out", 1, [1])
    buf._writer.error = None
    assert buf.append(RUN, "src", "out", 1, [1])[1].wait(10)


def test_a_closed_buffer_refuses_and_wakes_nobody_wrongly(tmp_path: Path) -> None:
    buf = DiskBuffer.for_pipeline(tmp_path, "p")
    buf.close()
    with pytest.raises(BufferFailed, match="closed"):
        buf.append(RUN, "src", "out", 1, [1])
    buf.ack(1, 1)  # acks after close are dropped quietly (replayed at the next start)


# -- stats -------------------------------------------------------------------------------------
def test_stats_show_items_bytes_age_and_commit_rate(buf: DiskBuffer) -> None:
    from harness import wait_for

    assert buf.stats()["items"] == 0 and buf.stats()["error"] is None
    buf.append(RUN, "src", "out", 1, list(range(100)))[1].wait(10)
    stats = wait_for(lambda: (s := buf.stats())["oldest_age_s"] > 0 and s, what="an age")
    assert stats["kind"] == "disk" and stats["sync"] == "normal" and stats["items"] == 100
    assert stats["bytes"] > 0
    for i in range(20):
        buf.append(RUN, "src", "out", 101 + i, [i])[1].wait(10)
    wait_for(lambda: buf.stats()["commits_per_s"] > 0, timeout=10, what="a commit rate")


def test_pickled_payload_is_plain_pickle_of_the_list(buf: DiskBuffer) -> None:
    rows, commit = buf.append(RUN, "src", "out", 1, ["a", "b"])
    assert commit.wait(10)
    conn = buf._writer.read(lambda c: c.execute("SELECT payload FROM entries").fetchone()[0])
    assert pickle.loads(conn) == ["a", "b"]  # docs/operations.md shows how to inspect a buffer this way


def test_forked_child_cannot_use_the_buffer_and_does_not_harm_it(buf: DiskBuffer, tmp_path: Path) -> None:
    rows, commit = buf.append(RUN, "src", "out", 1, ["before"])
    assert commit.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: any use is refused; dropping every reference must not close the file
        code = 1
        try:
            buf.append(RUN, "src", "out", 2, ["child"])
        except BufferFailed:
            code = 0
        import gc

        buf._writer._conn = None
        gc.collect()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    rows2, commit2 = buf.append(RUN, "src", "out", 2, ["after"])
    assert commit2.wait(10)
    buf.close()
    reopened = DiskBuffer.for_pipeline(tmp_path, "p")
    try:
        assert [e.items() for e in reopened.entries(rows2[0][0])] == [["before"], ["after"]]
    finally:
        reopened.close()


def test_the_buffer_is_private_whatever_the_umask_or_an_older_file(tmp_path: Path) -> None:
    """Buffered items are the pipeline's data, like dead letters: the directory 0700, the file
    and its WAL 0600 — also when they existed looser (made by hand, or with another umask)."""
    where = tmp_path / "buffers"
    where.mkdir(mode=0o755)
    os.chmod(where, 0o755)
    first = DiskBuffer.for_pipeline(tmp_path, "p")
    first.close()
    os.chmod(where / "p.sqlite3", 0o644)
    previous = os.umask(0o022)
    try:
        buffer = DiskBuffer.for_pipeline(tmp_path, "p")
        buffer.append(RUN, "src", "out", 1, [1, 2, 3])[1].wait(10)
        modes = {p.name: p.stat().st_mode & 0o777 for p in where.iterdir()}
        buffer.close()
    finally:
        os.umask(previous)
    assert where.stat().st_mode & 0o777 == 0o700
    assert modes == {"p.sqlite3": 0o600, "p.sqlite3-wal": 0o600}, modes


def test_rows_are_cut_by_size_and_an_item_over_the_limit_is_refused_by_name(
    buf: DiskBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_ROW_BYTES cuts a group into smaller rows (down to one item); one item pickling larger
    than MAX_ITEM_BYTES is Unserializable naming its place, type and size, and nothing is queued."""
    import pipelined.engine.disk_buffer as module

    monkeypatch.setattr(module, "MAX_ROW_BYTES", 10_000)
    monkeypatch.setattr(module, "MAX_ITEM_BYTES", 50_000)
    items = [str(i) * 4000 for i in range(9)] + [b"b" * 30_000]  # distinct: pickle memoizes repeats
    rows, commit = buf.append(RUN, "src", "out", 1, items)
    assert commit.wait(10)
    assert sum(n for _, n in rows) == 10 and max(n for _, n in rows) <= 2 and rows[-1][1] == 1
    stored = [x for e in buf.entries(buf.begin_replay()) for x in e.items()]
    assert stored == items
    before = buf.stats()["items"]
    with pytest.raises(Unserializable, match=r"item of type bytes cannot be saved .* 60\d\d\d bytes pickled, more than 50000") as caught:
        buf.append(RUN, "src", "out", 11, ["small", b"c" * 60_000])
    assert caught.value.index == 1
    assert buf.flush(10) and buf.stats()["items"] == before
