"""DeadLetterStore: memory bounded by bytes (previews), the whole letter on disk, rotation."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from pipelined.engine.deadletters import ITEM_PREVIEW_BYTES, MEMORY_BYTES, DeadLetterStore


def test_a_big_item_is_kept_whole_in_the_file_and_as_a_preview_in_memory(tmp_path: Path) -> None:
    store = DeadLetterStore("p", tmp_path)
    big = {"rows": ["x" * 1000] * 1000}  # ~1 MB of JSON
    letter = store.add("r-000001", "s", 1, "ValueError: no", big, traceback="Traceback ...\nValueError: no\n")
    assert letter["truncated"] is True
    assert isinstance(letter["item"], str) and letter["item"].startswith('{"rows":["xxx')
    assert len(letter["item"]) < ITEM_PREVIEW_BYTES + 200
    small = store.add("r-000001", "s", 1, "ValueError: no", {"n": 1})
    assert small["truncated"] is False and small["item"] == {"n": 1}
    store.close()
    lines = (tmp_path / "dead-letters" / "p.jsonl").read_bytes().splitlines()
    assert orjson.loads(lines[0])["item"] == big  # the whole item
    assert orjson.loads(lines[0])["traceback"].endswith("ValueError: no\n")
    assert orjson.loads(lines[0])["id"] == letter["id"] and orjson.loads(lines[1])["id"] == small["id"]
    again = DeadLetterStore("p", tmp_path)  # read back: previews again
    assert [d["id"] for d in again.list(5)] == [small["id"], letter["id"]]
    assert again.list(5)[1]["item"] == letter["item"] and again.list(5)[1]["truncated"] is True
    again.close()


def test_memory_is_bounded_by_bytes_whatever_the_number_of_letters(tmp_path: Path) -> None:
    store = DeadLetterStore("p", tmp_path, memory_bytes=1024 * 1024)
    for i in range(3000):
        store.add(f"r-{i:06d}", "s", 1, "ValueError: no", "y" * 200_000)  # 600 MB of items
    assert store.memory_used <= 1024 * 1024
    assert 10 <= len(store) < 100  # previews of 64 KiB: ~16 fit in 1 MiB
    newest = store.list(3)
    assert [d["run"] for d in newest] == ["r-002999", "r-002998", "r-002997"]
    assert store.highest_run_number() == 2999
    store.close()


def test_the_default_memory_cap_holds_for_many_small_letters(tmp_path: Path) -> None:
    store = DeadLetterStore("p", None)
    for i in range(12_000):
        store.add("r-000001", "s", 1, "ValueError: no", {"i": i})
    assert len(store) == 10_000 and store.memory_used <= MEMORY_BYTES
    assert store.list(1)[0]["item"] == {"i": 11_999}


def test_rotation_keeps_the_configured_number_of_files_and_logs_what_it_deletes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DeadLetterStore("p", tmp_path, rotate_bytes=2000, files=3)
    with caplog.at_level(logging.INFO, logger="pipelined.engine"):
        for i in range(60):
            store.add("r-000001", "s", 1, "E: x", "x" * 200 + str(i))
    store.close()
    folder = tmp_path / "dead-letters"
    names = {p.name for p in folder.iterdir()}
    assert {"p.jsonl.1", "p.jsonl.2"} <= names <= {"p.jsonl", "p.jsonl.1", "p.jsonl.2"}
    deleted = [r for r in caplog.records if "deleted p.jsonl.2" in r.getMessage()]
    assert deleted and deleted[0].levelname == "WARNING" and "letter(s)" in deleted[0].getMessage()
    assert all(getattr(r, "pipeline", None) == "p" for r in deleted)
    # read back: every kept file, oldest first
    kept = sum(len(p.read_bytes().splitlines()) for p in folder.iterdir())
    again = DeadLetterStore("p", tmp_path, rotate_bytes=2000, files=3)
    assert len(again) == kept and again.list(1)[0]["item"].endswith("59")
    again.close()


def test_one_file_only_deletes_the_full_file_at_rotation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DeadLetterStore("p", tmp_path, rotate_bytes=1000, files=1)
    with caplog.at_level(logging.WARNING, logger="pipelined.engine"):
        for i in range(20):
            store.add("r-000001", "s", 1, "E: x", "x" * 200 + str(i))
    store.close()
    assert [p.name for p in (tmp_path / "dead-letters").iterdir()] in (["p.jsonl"], [])
    assert any("deleted p.jsonl " in r.getMessage() for r in caplog.records)
