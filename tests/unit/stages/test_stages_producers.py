from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from stages_fake_context import FakeContext

from pipelined.stages import count, read_lines


def test_count_from_start_to_stop_by_step() -> None:
    assert list(count(start=2, stop=11, step=3)) == [2, 5, 8]
    assert list(count(start=3, stop=0, step=-1)) == [3, 2, 1]
    assert list(count(stop=0)) == []


def test_count_without_stop_is_infinite() -> None:
    numbers = count(start=5)
    assert [next(numbers) for _ in range(1000)][-1] == 1004
    numbers.close()


def test_count_waits_interval_between_items(ctx: FakeContext) -> None:
    began = time.monotonic()
    assert list(count(stop=3, interval="50ms", ctx=ctx)) == [0, 1, 2]
    elapsed = time.monotonic() - began
    assert 0.1 <= elapsed < 1.0  # two waits, none after the last item


def test_count_with_interval_ends_promptly_when_the_pipeline_drains(ctx: FakeContext) -> None:
    numbers = count(interval=30, ctx=ctx)
    assert next(numbers) == 0
    threading.Timer(0.1, lambda: setattr(ctx, "stopping", True)).start()
    began = time.monotonic()
    with pytest.raises(StopIteration):
        next(numbers)
    assert time.monotonic() - began < 2.0


def test_count_yields_nothing_once_stopping(ctx: FakeContext) -> None:
    ctx.stopping = True
    assert list(count(stop=10, interval=0, ctx=ctx)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 0}, "demo/source (count): step: must not be 0"),
        ({"start": "1"}, "demo/source (count): start: expected an integer, got '1'"),
        ({"stop": 2.5}, "demo/source (count): stop: expected an integer, got 2.5"),
        ({"interval": "5 parsecs"}, "demo/source (count): interval: invalid duration '5 parsecs': expected"),
        (
            {"interval": -1},
            "demo/source (count): interval: invalid duration -1: must be a finite number >= 0",
        ),
    ],
)
def test_count_names_the_bad_argument(ctx: FakeContext, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        list(count(ctx=ctx, **{"stop": 3, **kwargs}))  # type: ignore[arg-type]
    assert message in str(info.value)


def test_read_lines_yields_lines_without_newlines(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"alpha\r\n  beta \n\ngamma")
    assert list(read_lines(str(path))) == ["alpha", "  beta ", "", "gamma"]
    assert list(read_lines(str(path), strip=True)) == ["alpha", "beta", "", "gamma"]
    assert list(read_lines(str(path), strip=True, skip_empty=True)) == ["alpha", "beta", "gamma"]


def test_read_lines_replaces_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"caf\xe9\n")
    assert list(read_lines(str(path))) == ["caf\ufffd"]


def test_read_lines_resolves_relative_paths_against_the_state_dir(state_dir: Path) -> None:
    (state_dir / "data").mkdir(parents=True)
    (state_dir / "data" / "in.txt").write_text("one\ntwo\n")
    assert list(read_lines("data/in.txt")) == ["one", "two"]


def test_read_lines_missing_file_names_stage_key_and_path(ctx: FakeContext, tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(
        FileNotFoundError, match=f"demo/source \\(read_lines\\): path: no such file: {missing}"
    ):
        list(read_lines(str(missing), ctx=ctx))


def test_read_lines_rejects_unknown_encoding(ctx: FakeContext, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("x\n")
    with pytest.raises(ValueError, match="encoding: unknown encoding 'klingon'"):
        list(read_lines(str(path), encoding="klingon", ctx=ctx))
