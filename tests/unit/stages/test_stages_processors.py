"""log, sleep and write_jsonl."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson
import pytest
from stages_fake_context import FakeContext

from pipelined.stages import JsonlWriter, log, sleep, write_jsonl


def test_log_logs_the_item_as_json_and_returns_it(ctx: FakeContext, caplog: pytest.LogCaptureFixture) -> None:
    item = {"n": 1, "tags": ["a"]}
    with caplog.at_level(logging.INFO, logger="tests.stages"):
        assert log(item, prefix="seen: ", ctx=ctx) is item
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", 'seen: {"n":1,"tags":["a"]}')]


def test_log_respects_level_and_cuts_long_items(ctx: FakeContext, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tests.stages"):
        log("quiet", level="info", ctx=ctx)
        log("x" * 50, level="warning", max_chars=10, ctx=ctx)
    assert [r.getMessage() for r in caplog.records] == ['"xxxxxxxxx... (52 chars)']


def test_log_shows_what_json_cannot_hold_as_repr(ctx: FakeContext, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tests.stages"):
        log({1: {2, 3} - {3}}, ctx=ctx)
    assert caplog.records[0].getMessage() == '{"1":"{2}"}'


def test_log_without_ctx_uses_its_own_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipelined.stages.log"):
        assert log(7) == 7
    assert caplog.records[0].name == "pipelined.stages.log"


def test_log_rejects_an_unknown_level(ctx: FakeContext) -> None:
    with pytest.raises(
        ValueError, match=r"demo/source \(log\): level: expected one of debug, info, warning, error"
    ):
        log(1, level="loud", ctx=ctx)


def test_sleep_returns_the_item_after_the_duration(ctx: FakeContext) -> None:
    began = time.monotonic()
    assert sleep("x", seconds="50ms", ctx=ctx) == "x"
    assert sleep("y", seconds=0.02, ctx=ctx) == "y"
    assert time.monotonic() - began >= 0.07


def test_sleep_names_a_bad_duration(ctx: FakeContext) -> None:
    with pytest.raises(ValueError, match=r"demo/source \(sleep\): seconds: invalid duration 'a while'"):
        sleep(1, seconds="a while", ctx=ctx)


def read_jsonl(path: Path) -> list[object]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_write_jsonl_appends_one_line_per_item(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.jsonl"
    assert write_jsonl is JsonlWriter
    writer = write_jsonl(str(path))
    writer.setup()
    writer({"n": 1})
    writer([1, 2, 3])
    writer("text")
    writer.close()
    again = write_jsonl(str(path))  # append = true keeps what is there
    again({"n": 2})
    again.close()
    assert read_jsonl(path) == [{"n": 1}, [1, 2, 3], "text", {"n": 2}]


def test_write_jsonl_append_false_empties_the_file_at_setup(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('"old"\n')
    writer = write_jsonl(str(path), append=False, fsync=True)
    writer.setup()
    writer(1)
    writer.close()
    assert read_jsonl(path) == [1]


def test_write_jsonl_relative_path_goes_to_the_state_dir(state_dir: Path) -> None:
    writer = write_jsonl("out/numbers.jsonl")
    writer({"x": object.__name__})
    writer.close()
    assert read_jsonl(state_dir / "out" / "numbers.jsonl") == [{"x": "object"}]


def test_write_jsonl_from_many_threads_never_interleaves_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writers = [write_jsonl(str(path)) for _ in range(4)]  # one instance per worker, like the engine

    def write_many(index: int) -> None:
        for n in range(500):
            writers[index]({"worker": index, "n": n, "pad": "x" * 200})

    threads = [threading.Thread(target=write_many, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        writer.close()
    rows = read_jsonl(path)
    assert len(rows) == 2000
    assert sorted((r["worker"], r["n"]) for r in rows) == [(w, n) for w in range(4) for n in range(500)]  # type: ignore[index]


def test_write_jsonl_bad_arguments_name_the_key() -> None:
    with pytest.raises(TypeError, match="write_jsonl: append: expected true or false, got 'yes'"):
        write_jsonl("x.jsonl", append="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="write_jsonl: path: expected a non-empty path string"):
        write_jsonl("")


def test_write_jsonl_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = write_jsonl(str(blocker / "out.jsonl"))  # a directory that is a file
    with pytest.raises(OSError, match=f"write_jsonl: path: cannot open {blocker}/out.jsonl for writing"):
        writer.setup()


def _nested(depth: int) -> list[object]:
    """Valid JSON nested `depth` levels deep: [[[...["bottom"]...]]]."""
    item: list[object] = ["bottom"]
    for _ in range(depth - 1):
        item = [item]
    return item


def test_log_falls_back_to_repr_for_json_nested_deeper_than_orjson_allows(
    ctx: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    item = _nested(300)  # orjson stops at 255 levels
    with caplog.at_level(logging.INFO, logger="tests.stages"):
        assert log(item, max_chars=100_000, ctx=ctx) is item
    assert caplog.records[0].getMessage() == orjson.dumps(repr(item)).decode()


def test_write_jsonl_falls_back_to_repr_for_json_nested_deeper_than_orjson_allows(tmp_path: Path) -> None:
    writer = write_jsonl(str(tmp_path / "deep.jsonl"))
    writer(_nested(300))
    writer(_nested(3))
    writer.close()
    lines = (tmp_path / "deep.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [repr(_nested(300)), [[["bottom"]]]]


def test_an_item_too_deep_even_for_repr_is_still_one_line(tmp_path: Path) -> None:
    writer = write_jsonl(str(tmp_path / "deeper.jsonl"))
    writer(_nested(100_000))  # repr() itself gives up (RecursionError)
    writer.close()
    (line,) = (tmp_path / "deeper.jsonl").read_bytes().splitlines()
    assert orjson.loads(line).startswith("<unrepresentable list")
