"""tail_file: follows appends, rotation and truncation; keeps its offset across runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stages_fake_context import FakeContext

from pipelined.stages import tail_file

pytestmark = pytest.mark.timeout(15)  # a tail that misses a line would wait forever

FAST = 0.01  # poll interval for tests: a waiting tail looks again after 10 ms


def take(lines: Iterator[str], n: int) -> list[str]:
    return [next(lines) for _ in range(n)]


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def offset_record(state_dir: Path, ctx: FakeContext) -> list[str]:
    return (state_dir / "tail" / f"{ctx.pipeline}-{ctx.stage}.offset").read_text().split()


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("old 1\nold 2\n")
    return path


def test_starts_at_the_end_and_yields_appended_lines(
    log_file: Path, ctx: FakeContext, state_dir: Path
) -> None:
    lines = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    append(log_file, "new 1\r\nnew 2\n")
    assert take(lines, 2) == ["new 1", "new 2"]
    lines.close()


def test_start_beginning_reads_existing_lines(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    lines = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert take(lines, 2) == ["old 1", "old 2"]
    lines.close()


def test_waits_for_a_partial_line_to_be_completed(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    lines = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    append(log_file, "hal")
    threading.Timer(0.05, append, (log_file, "f done\n")).start()
    assert next(lines) == "half done"
    lines.close()


def test_ends_promptly_when_the_pipeline_drains(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    lines = tail_file(str(log_file), poll_interval=0.2, ctx=ctx)
    threading.Timer(0.1, lambda: setattr(ctx, "stopping", True)).start()
    began = time.monotonic()
    with pytest.raises(StopIteration):
        next(lines)
    assert time.monotonic() - began < 2.0


def test_a_closed_run_resumes_after_the_last_line_it_yielded(
    log_file: Path, ctx: FakeContext, state_dir: Path
) -> None:
    first = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert take(first, 1) == ["old 1"]
    first.close()  # a drain or reload closes the generator at its yield: "old 1" was taken
    append(log_file, "new 1\n")
    second = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    assert take(second, 2) == ["old 2", "new 1"]  # neither repeated nor skipped
    second.close()


def test_the_offset_is_saved_when_the_next_line_is_asked_for(
    log_file: Path, ctx: FakeContext, state_dir: Path
) -> None:
    lines = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert next(lines) == "old 1"
    assert not (state_dir / "tail" / "demo-source.offset").read_text().strip()  # not taken yet
    assert next(lines) == "old 2"
    inode, offset, path = offset_record(state_dir, ctx)
    assert (int(inode), int(offset), path) == (log_file.stat().st_ino, len("old 1\n"), str(log_file))
    lines.close()
    assert int(offset_record(state_dir, ctx)[1]) == len("old 1\nold 2\n")


def test_follows_rotation_by_rename_and_recreate(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    lines = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    append(log_file, "before rotation\n")
    assert next(lines) == "before rotation"
    append(log_file, "last words")  # no newline: the old file ends mid-line
    log_file.rename(log_file.with_name("app.log.1"))
    log_file.write_text("fresh 1\n")
    assert take(lines, 2) == ["last words", "fresh 1"]
    lines.close()


def test_rotation_while_not_running_finishes_the_rotated_file_first(
    log_file: Path, ctx: FakeContext, state_dir: Path
) -> None:
    first = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert take(first, 1) == ["old 1"]
    first.close()
    append(log_file, "old 3\n")
    log_file.rename(log_file.with_name("app.log.1"))
    log_file.write_text("fresh 1\n")
    second = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    assert take(second, 3) == ["old 2", "old 3", "fresh 1"]
    second.close()


def test_truncation_restarts_at_the_beginning(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    lines = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert take(lines, 2) == ["old 1", "old 2"]
    log_file.write_text("x\n")  # truncates in place: same inode, smaller than our offset
    assert next(lines) == "x"
    lines.close()


def test_truncation_while_not_running_restarts_at_the_beginning(
    log_file: Path, ctx: FakeContext, state_dir: Path
) -> None:
    first = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert take(first, 2) == ["old 1", "old 2"]
    first.close()
    log_file.write_text("y\n")
    second = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    assert next(second) == "y"
    second.close()


def test_a_file_that_appears_later_is_read_from_its_beginning(
    tmp_path: Path, ctx: FakeContext, state_dir: Path
) -> None:
    path = tmp_path / "later.log"
    lines = tail_file(str(path), poll_interval=FAST, ctx=ctx)
    threading.Timer(0.05, path.write_text, ("first\n",)).start()
    assert next(lines) == "first"
    lines.close()


def test_another_path_ignores_the_saved_offset(
    log_file: Path, tmp_path: Path, ctx: FakeContext, state_dir: Path
) -> None:
    first = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert take(first, 2) == ["old 1", "old 2"]
    first.close()
    other = tmp_path / "other.log"
    other.write_text("other 1\n")
    second = tail_file(str(other), start="beginning", poll_interval=FAST, ctx=ctx)
    assert next(second) == "other 1"
    second.close()


def test_two_runs_of_one_stage_are_refused(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    first = tail_file(str(log_file), start="beginning", poll_interval=FAST, ctx=ctx)
    assert next(first) == "old 1"
    with pytest.raises(RuntimeError, match=r"demo/source \(tail_file\): already running: .*threads = 1"):
        next(tail_file(str(log_file), poll_interval=FAST, ctx=ctx))
    first.close()


def test_relative_path_resolves_against_the_state_dir(ctx: FakeContext, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "in.log").write_text("a\n")
    lines = tail_file("in.log", start="beginning", poll_interval=FAST, ctx=ctx)
    assert next(lines) == "a"
    lines.close()


def test_bad_arguments_name_stage_and_key(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"demo/source \(tail_file\): start: expected one of end, beginning"):
        next(tail_file(str(log_file), start="middle", ctx=ctx))
    with pytest.raises(ValueError, match=r"demo/source \(tail_file\): poll_interval: invalid duration"):
        next(tail_file(str(log_file), poll_interval="soon", ctx=ctx))


def test_without_ctx_nothing_is_saved(log_file: Path, state_dir: Path) -> None:
    lines = tail_file(str(log_file), start="beginning", poll_interval=FAST)
    assert take(lines, 2) == ["old 1", "old 2"]
    lines.close()
    assert not os.path.exists(state_dir / "tail")


def test_restarts_under_concurrent_appends_neither_repeat_nor_skip(
    log_file: Path, ctx: FakeContext, state_dir: Path
) -> None:
    expected = [f"line {n}" for n in range(600)]
    writer = threading.Thread(target=lambda: [append(log_file, line + "\n") for line in expected])
    lines = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    writer.start()
    seen: list[str] = []
    for chunk in (150, 150, 300):  # a reload after 150 and after 300 lines
        seen += take(lines, chunk)
        lines.close()
        lines = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    writer.join()
    ctx.stopping = True
    assert seen + list(lines) == expected


CRASHING_TAIL = """
import logging, os, signal, sys
from pipelined.stages import tail_file

class Ctx:
    pipeline, stage, run, stopping = "demo", "source", "r-1", False
    logger = logging.getLogger("x")

lines = tail_file(sys.argv[1], start="beginning", poll_interval=0.01, ctx=Ctx())
print(next(lines), next(lines), sep="\\n", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the engine had taken line 2 but never asked for line 3
"""


def test_a_crash_repeats_at_most_the_last_line(log_file: Path, ctx: FakeContext, state_dir: Path) -> None:
    append(log_file, "old 3\n")
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_TAIL, str(log_file)], capture_output=True, text=True, timeout=30
    )
    assert crashed.returncode == -9, crashed.stderr
    assert crashed.stdout.split("\n")[:2] == ["old 1", "old 2"]
    lines = tail_file(str(log_file), poll_interval=FAST, ctx=ctx)
    assert take(lines, 2) == ["old 2", "old 3"]  # at-least-once: "old 2" is delivered again
    lines.close()


def test_unreadable_paths_and_encodings_name_stage_and_key(
    tmp_path: Path, ctx: FakeContext, state_dir: Path
) -> None:
    with pytest.raises(
        OSError, match=rf"demo/source \(tail_file\): path: {tmp_path} is a directory; built-in stages only"
    ):
        tail_file(str(tmp_path), ctx=ctx)
    with pytest.raises(ValueError, match=r"demo/source \(tail_file\): encoding: unknown encoding 'klingon'"):
        tail_file(str(tmp_path / "x.log"), encoding="klingon", ctx=ctx)
