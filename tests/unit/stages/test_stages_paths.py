"""Built-in file stages stay under their roots and read only regular files (issue 16, finding 3).

Each refusal names the stage, the argument, the path and the rule; a FIFO or /dev/zero is refused
without reading (the review's `{"path": "/dev/zero"}` grew the daemon by 2 GB in 8 s).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from stages_fake_context import FakeContext

from pipelined.stages import read_lines, tail_file, write_jsonl
from pipelined.stages._paths import PathRefused

pytestmark = pytest.mark.timeout(15)  # a FIFO that blocked the stage would hang here


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A read root and a write root side by side, with a file outside both."""
    readable, writable = tmp_path / "in", tmp_path / "out"
    readable.mkdir()
    writable.mkdir()
    (readable / "ok.txt").write_text("one\ntwo\n")
    (tmp_path / "secret.txt").write_text("shadow\n")
    monkeypatch.setenv("PIPELINED_READ_PATHS", os.pathsep.join([str(readable), str(writable)]))
    monkeypatch.setenv("PIPELINED_WRITE_PATHS", str(writable))
    monkeypatch.setenv("PIPELINED_STATE_DIR", str(writable))
    return readable, writable


def test_a_file_under_a_read_root_is_read(roots: tuple[Path, Path], ctx: FakeContext) -> None:
    readable, _ = roots
    assert list(read_lines(str(readable / "ok.txt"), ctx=ctx)) == ["one", "two"]


@pytest.mark.parametrize(
    "given",
    ["../secret.txt", "../../../../../../etc/passwd", "/etc/shadow", "/proc/self/environ", "/dev/zero"],
)
def test_paths_leaving_every_root_are_refused(roots: tuple[Path, Path], ctx: FakeContext, given: str) -> None:
    with pytest.raises(PathRefused) as info:
        list(read_lines(given, ctx=ctx))
    message = str(info.value)
    assert message.startswith("demo/source (read_lines): path: ")
    assert "is outside the roots allowed for reading ([daemon] read_paths: " in message
    assert str(roots[0]) in message


def test_tilde_is_not_the_home_directory(roots: tuple[Path, Path], ctx: FakeContext) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such file: .*/out/~/\.bashrc"):
        list(read_lines("~/.bashrc", ctx=ctx))


def test_a_symlink_out_of_the_roots_is_refused(
    roots: tuple[Path, Path], ctx: FakeContext, tmp_path: Path
) -> None:
    readable, _ = roots
    (readable / "link.txt").symlink_to(tmp_path / "secret.txt")
    (readable / "dir").symlink_to(tmp_path)
    for given in (readable / "link.txt", readable / "dir" / "secret.txt"):
        with pytest.raises(PathRefused, match="leads through a symlink to .*secret.txt, outside the roots"):
            list(read_lines(str(given), ctx=ctx))
    inside = readable / "inside.txt"
    inside.symlink_to(readable / "ok.txt")  # a symlink that stays inside is fine
    assert list(read_lines(str(inside), ctx=ctx)) == ["one", "two"]


def test_devices_fifos_and_directories_are_refused(
    roots: tuple[Path, Path], ctx: FakeContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    readable, _ = roots
    fifo = readable / "pipe"
    os.mkfifo(fifo)
    monkeypatch.setenv("PIPELINED_READ_PATHS", os.pathsep.join([str(readable), "/dev"]))
    cases = {"/dev/zero": "a character device", str(fifo): "a FIFO", str(readable): "a directory"}
    for given, kind in cases.items():
        with pytest.raises(
            PathRefused, match=f"path: {given} is {kind}; built-in stages only use regular files"
        ):
            list(read_lines(given, ctx=ctx))
        with pytest.raises(PathRefused, match=f"is {kind}"):
            tail_file(given, ctx=ctx)


def test_tail_file_refuses_a_path_outside_before_it_exists(
    roots: tuple[Path, Path], ctx: FakeContext
) -> None:
    with pytest.raises(PathRefused, match=r"\(tail_file\): path: /var/log/nothing-here.log is outside"):
        tail_file("/var/log/nothing-here.log", ctx=ctx)


def test_a_symlink_swapped_in_after_the_start_is_refused_by_tail_file(
    roots: tuple[Path, Path], ctx: FakeContext, tmp_path: Path
) -> None:
    readable, writable = roots
    lines = tail_file(str(readable / "later.log"), poll_interval=0.01, ctx=ctx)  # not there yet: waited for
    (readable / "later.log").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PathRefused, match="later.log leads through a symlink"):
        next(lines)


def test_write_jsonl_outside_the_write_roots_fails_each_attempt(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    readable, writable = roots
    for given, rule in (
        (str(readable / "x.jsonl"), r"is outside the roots allowed for writing \(\[daemon\] write_paths: "),
        ("../escape.jsonl", "is outside the roots allowed for writing"),
        ("/dev/null", "is outside the roots allowed for writing"),
    ):
        writer = write_jsonl(given)
        writer.setup()  # the pipeline still starts ...
        with pytest.raises(PathRefused, match=rule):
            writer({"n": 1})  # ... and every attempt fails, naming the path and the rule
    assert not (readable / "x.jsonl").exists() and not (tmp_path / "escape.jsonl").exists()


def test_write_jsonl_never_follows_a_symlink_or_writes_to_a_fifo(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    _, writable = roots
    (writable / "link.jsonl").symlink_to(tmp_path / "victim.jsonl")
    with pytest.raises(PathRefused, match="leads through a symlink"):
        write_jsonl(str(writable / "link.jsonl"))(1)
    assert not (tmp_path / "victim.jsonl").exists()
    os.mkfifo(writable / "fifo.jsonl")
    with pytest.raises(PathRefused, match="is a FIFO"):
        write_jsonl(str(writable / "fifo.jsonl"))(1)


def test_files_and_directories_written_are_private_whatever_the_umask(roots: tuple[Path, Path]) -> None:
    _, writable = roots
    old = os.umask(0)
    try:
        writer = write_jsonl("deep/er/out.jsonl")
        writer({"n": 1})
        writer.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((writable / "deep" / "er" / "out.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((writable / "deep" / "er").stat().st_mode) == 0o700
    assert stat.S_IMODE((writable / "deep").stat().st_mode) == 0o700


def test_tail_offsets_are_private(roots: tuple[Path, Path], ctx: FakeContext) -> None:
    readable, writable = roots
    old = os.umask(0)
    try:
        lines = tail_file(str(readable / "ok.txt"), start="beginning", poll_interval=0.01, ctx=ctx)
        assert next(lines) == "one"
        lines.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((writable / "tail" / "demo-source.offset").stat().st_mode) == 0o600
    assert stat.S_IMODE((writable / "tail").stat().st_mode) == 0o700


# -- max_line -------------------------------------------------------------------------------------
def test_read_lines_cuts_long_lines_and_counts_them(
    roots: tuple[Path, Path], ctx: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    readable, _ = roots
    path = readable / "long.txt"
    path.write_text("short\n" + "x" * 5000 + "\nafter\n" + "y" * 20 + "\n" + "z" * 30)
    with caplog.at_level(logging.WARNING, logger="tests.stages"):
        lines = list(read_lines(str(path), max_line=10, ctx=ctx))
    assert lines == ["short", "x" * 10, "after", "y" * 10, "z" * 10]
    assert f"{path}: line 2 is longer than max_line (10): cut (1 line(s) cut so far)" in caplog.text
    assert f"{path}: 3 line(s) longer than max_line (10) were cut" in caplog.text


def test_read_lines_default_max_line_is_one_mib(roots: tuple[Path, Path], ctx: FakeContext) -> None:
    readable, _ = roots
    path = readable / "huge.txt"
    path.write_bytes(b"a" * (3 * 1024 * 1024) + b"\nend\n")
    assert [len(line) for line in read_lines(str(path), ctx=ctx)] == [1024 * 1024, 3]


def test_max_line_must_be_a_size(roots: tuple[Path, Path], ctx: FakeContext) -> None:
    readable, _ = roots
    with pytest.raises(ValueError, match=r"\(read_lines\): max_line: must be at least 1 byte"):
        list(read_lines(str(readable / "ok.txt"), max_line=0, ctx=ctx))
    with pytest.raises(ValueError, match=r"\(tail_file\): max_line: invalid size 'lots'"):
        tail_file(str(readable / "ok.txt"), max_line="lots", ctx=ctx)


def test_tail_file_cuts_a_growing_line_without_holding_it(
    roots: tuple[Path, Path], ctx: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    readable, _ = roots
    path = readable / "app.log"
    path.write_bytes(b"")
    lines = tail_file(str(path), max_line="1KiB", poll_interval=0.01, ctx=ctx)
    taken: list[str] = []
    reader = threading.Thread(target=lambda: taken.extend(next(lines) for _ in range(3)))
    with caplog.at_level(logging.WARNING, logger="tests.stages"):
        reader.start()
        with open(path, "ab") as handle:
            handle.write(b"first\n")
            for _ in range(64):  # 4 MiB of one line with no newline yet: never held whole
                handle.write(b"q" * 65536)
                handle.flush()
            handle.write(b"\nlast\n")
        reader.join(10)
    lines.close()
    assert taken == ["first", "q" * 1024, "last"]
    assert "is longer than max_line (1024): cut (1 line(s) cut so far)" in caplog.text
    assert "1 line(s) longer than max_line (1024) were cut" in caplog.text


# -- a directory swapped for a symlink while a file is being opened -------------------------------
@pytest.mark.parametrize("depth", ["existing", "created"])
def test_a_directory_swapped_for_a_symlink_after_the_check_creates_nothing_outside(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: str
) -> None:
    """The check (`confine`) passes, then another process renames a directory on the way and puts
    a symlink out of the roots in its place, before the file is opened with O_CREAT. Opening
    through the path followed that symlink and created an empty file outside the roots (the check
    after opening refused it, but the file stayed); components are now opened one by one
    relative to the root, never following a symlink, so nothing is created outside."""
    _, writable = roots
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (writable / "logs").mkdir()
    target = writable / "logs" / ("out.jsonl" if depth == "existing" else "new/out.jsonl")
    real_open = os.open
    swapped = []

    def swap_then_open(*args: Any, **kwargs: Any) -> int:
        if not swapped:  # the race: every check is done, the first open is about to happen
            (writable / "logs").rename(writable / "logs.moved")
            (writable / "logs").symlink_to(outside)
            swapped.append(True)
        return real_open(*args, **kwargs)

    writer = write_jsonl(str(target))
    monkeypatch.setattr(os, "open", swap_then_open)
    try:
        with pytest.raises(PathRefused, match="logs"):
            writer({"n": 1})
    finally:
        monkeypatch.setattr(os, "open", real_open)
    assert swapped
    assert sorted(p.name for p in outside.rglob("*")) == []  # nothing created outside the roots


def test_a_write_root_that_does_not_exist_yet_is_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "not" / "yet"
    monkeypatch.setenv("PIPELINED_WRITE_PATHS", str(root))
    monkeypatch.setenv("PIPELINED_STATE_DIR", str(root))
    writer = write_jsonl("sub/out.jsonl")
    writer({"n": 1})
    writer.close()
    assert (root / "sub" / "out.jsonl").read_text() == '{"n":1}\n'
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
