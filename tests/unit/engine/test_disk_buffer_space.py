"""The disk buffer when the disk says no (a real size-limited tmpfs, a real read-only remount),
and the size of its WAL and file under a long append/ack loop and after a backlog."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import wait_for
from pipelined.engine.buffer_writer import MAINTENANCE_S
from pipelined.engine.disk_buffer import BufferOpenError, BufferUnavailable, DiskBuffer

RUN = "r-000001"


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def fill(where: Path) -> Path:
    """Use up every free byte of the file system; the filler file."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_refuses_new_items_keeps_accepted_ones_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        buf = DiskBuffer.for_pipeline(mnt, "p")
        try:
            buf.begin_run(RUN, "src", "producer", "t")
            rows, commit = buf.append(RUN, "src", "out", 1, ["accepted"])
            assert commit.wait(10)
            filler = fill(mnt)
            blob = ["x" * 400_000]
            blocked, blocked_commit = buf.append(RUN, "src", "out", 2, blob, refuse=False)  # a producer's
            error = wait_for(lambda: buf.stats()["error"], what="the disk-full error in stats")
            assert "disk buffer unavailable" in error and "full" in error
            assert not blocked_commit.done  # the producer stays blocked
            with pytest.raises(BufferUnavailable, match="full"):  # a trigger is refused (503)
                buf.append(RUN, "src", "out", 3, ["refused"])
            buf.ack(rows[0][0], 1, RUN, finished=1)  # acknowledgements queue meanwhile
            filler.unlink()  # space returns
            assert blocked_commit.wait(20)
            assert buf.stats()["error"] is None
            buf.append(RUN, "src", "out", 3, ["after"])[1].wait(10)
        finally:
            buf.close()
        reopened = DiskBuffer.for_pipeline(mnt, "p")
        try:
            stored = [e.items() for e in reopened.entries(reopened.begin_replay())]
            assert stored == [blob, ["after"]]
            assert reopened.stored_runs()[0].finished == 1
        finally:
            reopened.close()


def test_a_read_only_state_dir_fails_the_open_with_a_clear_error(tmp_path: Path) -> None:
    """Linux refuses to remount a file system read-only while a file on it is open for writing
    ("mount point is busy"), so a read-only state dir can only be met at open; mid-run write
    errors take the same path as the disk-full test above (BufferWriter._refused)."""
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        (mnt / "buffers").mkdir()
        remount(mnt, "ro")
        with pytest.raises(BufferOpenError, match=r"p\.sqlite3: cannot open or create the buffer file: .*Read-only file system"):
            DiskBuffer.for_pipeline(mnt, "p")
        remount(mnt, "rw")
        buf = DiskBuffer.for_pipeline(mnt, "p")  # writable again: it opens
        buf.close()


def wal_bytes(buf: DiskBuffer) -> int:
    wal = buf.path.with_name(buf.path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_wal_stays_bounded_under_a_long_append_ack_loop(tmp_path: Path) -> None:
    buf = DiskBuffer.for_pipeline(tmp_path, "p")
    try:
        largest = 0
        row = ["y" * 100_000]
        for i in range(400):  # 40 MB through the buffer, never more than a few rows stored
            rows, commit = buf.append(RUN, "src", "out", i + 1, row)
            assert commit.wait(10)
            buf.ack(rows[0][0], 1)
            largest = max(largest, wal_bytes(buf))
        assert largest < 12 * 1024 * 1024, f"WAL grew to {largest} bytes"
        assert buf.flush(10)
        wait_for(lambda: wal_bytes(buf) == 0, timeout=MAINTENANCE_S + 10, what="the WAL truncated when idle")
    finally:
        buf.close()


def test_the_file_shrinks_after_a_backlog_is_worked_off(tmp_path: Path) -> None:
    buf = DiskBuffer.for_pipeline(tmp_path, "p")
    try:
        backlog = []
        for i in range(200):  # a 20 MB backlog
            rows, commit = buf.append(RUN, "src", "out", i + 1, ["z" * 100_000])
            backlog.append(rows[0][0])
        assert commit.wait(30)
        wait_for(lambda: wal_bytes(buf) == 0, timeout=MAINTENANCE_S + 10, what="the backlog checkpointed")
        peak = buf.path.stat().st_size
        assert peak > 15_000_000
        for entry_id in backlog:
            buf.ack(entry_id, 1)
        assert buf.flush(10)
        wait_for(lambda: buf.stats()["bytes"] < peak // 10, timeout=MAINTENANCE_S + 10,
                 what="the file and its WAL given back to the file system")
        assert buf.stats()["items"] == 0
    finally:
        buf.close()
