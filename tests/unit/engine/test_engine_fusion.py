"""Fused inline chains (engine/fusion.py): a chain of fast one-thread stages run as one loop must
be indistinguishable from the same stages run one by one — counters, run counts, retries and
dead letters at the right stage, BaseExceptions, and the `stage` field of user code's logs."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import engine_stagefns as fns
import pytest
from engine_helpers import finished_run, pipeline, running, stage

from pipelined.engine import fusion, slices
from pipelined.logcontext import ContextFilter

N = 20_000


@pytest.fixture
def fused_parts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the chunks that went through a fused chain (to check fusion happened)."""
    sizes: list[int] = []
    run_part = fusion._run_part

    def counting(chain: Any, chunk: Any) -> None:
        sizes.append(len(chain))
        run_part(chain, chunk)

    monkeypatch.setattr(fusion, "_run_part", counting)
    return sizes


def _filters_and_failures(key: str):  # type: ignore[no-untyped-def]
    return pipeline(
        stage("src", "producer", "count_to", auto_start=False, args={"n": N}),
        stage("evens", call="evens"),
        stage("picky", call="fail_multiples", args={"of": 100, "rem": 50}, max_retries=1, retry_backoff=0.2),
        stage("inc", call="inc"),
        stage("sink", "consumer", "collect", args={"key": key}),
    )


def _observed(rt: Any, run: dict[str, Any], key: str) -> tuple[Any, ...]:
    stats = rt.stats()["stages"]
    fields = ("items_in", "items_out", "items_failed", "items_retried", "items_dead_lettered")
    rows = {name: tuple(row[f] for f in fields) for name, row in stats.items()}
    letters = sorted((d["stage"], d["item"]) for d in rt.book.dead_letters.list(1000))
    return run["state"], run["items"], rows, letters, Counter(fns.COLLECTED[key])


def test_a_fused_chain_counts_exactly_like_stages_run_one_by_one(
    monkeypatch: pytest.MonkeyPatch, fused_parts: list[int]
) -> None:
    with running(_filters_and_failures("fused")) as rt:
        run = finished_run(rt, rt.trigger("src"), timeout=60)
        fused = _observed(rt, run, "fused")
    assert fused_parts and max(fused_parts) == 4  # evens -> picky -> inc -> sink, one loop
    monkeypatch.setattr(fusion, "MAX_CHAIN", 1)  # no chain: each stage on its own
    fused_parts.clear()
    with running(_filters_and_failures("plain")) as rt:
        run = finished_run(rt, rt.trigger("src"), timeout=60)
        plain = _observed(rt, run, "plain")
    assert not fused_parts
    assert fused == plain
    state, items, rows, letters, collected = fused
    assert state == "failed" and items["filtered"] == N // 2 and items["dead_lettered"] == N // 100
    assert letters == [("picky", x) for x in range(50, N, 100)]  # dead-lettered where they failed
    assert rows["picky"][3] == N // 100  # each retried once, at its own stage
    assert collected == Counter(x + 1 for x in range(0, N, 2) if x % 100 != 50)


def test_a_base_exception_in_a_fused_chain_fails_only_that_item(fused_parts: list[int]) -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", auto_start=False, args={"n": N}),
        stage("inc", call="inc"),
        stage("exits", call="exit_on", args={"at": N - 100}, max_retries=0),
        stage("sink", "consumer", "collect", args={"key": "exits"}),
    )
    with running(spec) as rt:
        run = finished_run(rt, rt.trigger("src"), timeout=60)
        assert run["state"] == "failed" and run["items"]["dead_lettered"] == 1, run
        assert run["items"]["finished"] == N - 1
        [letter] = rt.book.dead_letters.list(10)
        assert letter["stage"] == "exits" and letter["error"].startswith("SystemExit")
        assert fused_parts
        second = finished_run(rt, rt.trigger("src"), timeout=60)  # the threads are all still there
        assert second["items"]["finished"] == N - 1


def test_user_code_in_a_fused_chain_logs_with_its_own_stage(fused_parts: list[int]) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(ContextFilter())
    fns.USER_LOG.addHandler(handler)
    try:
        spec = pipeline(
            stage("src", "producer", "count_to", auto_start=False, args={"n": N}),
            stage("inc", call="inc"),
            stage("talker", call="log_every", args={"every": 1000}),
            stage("sink", "consumer", "collect", args={"key": "talker"}),
        )
        with running(spec) as rt:
            run_id = rt.trigger("src")
            finished_run(rt, run_id, timeout=60)
    finally:
        fns.USER_LOG.removeHandler(handler)
    assert fused_parts and len(records) == N // 1000
    assert {(r.pipeline, r.stage, r.run) for r in records} == {("p", "talker", run_id)}  # type: ignore[attr-defined]


def test_a_producer_feeding_a_fused_chain_pulls_slices_past_the_queue_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """No queue holds them: the slices a fused chain runs in the producer's thread may grow to
    INLINE_FLUSH_AT (fewer per-slice costs), and every item is still counted once."""
    sizes: list[int] = []
    run_part = fusion._run_part

    def counting(chain: Any, chunk: Any) -> None:
        sizes.append(len(chunk.items))
        run_part(chain, chunk)

    monkeypatch.setattr(fusion, "_run_part", counting)
    monkeypatch.setattr(slices, "SLOW_SLICE_S", 1.0)  # the machine's load never shrinks a slice
    n = 5 * slices.INLINE_FLUSH_AT
    spec = pipeline(
        stage("src", "producer", "count_to", auto_start=False, args={"n": n}),
        stage("inc", call="inc"),
        stage("sink", "consumer", "collect", args={"key": "big slices"}),
    )
    with running(spec) as rt:
        for _ in range(2):  # the first run learns the stages are fast
            run = finished_run(rt, rt.trigger("src"), timeout=60)
            assert run["items"]["finished"] == n
        assert rt.stats()["stages"]["inc"]["items_in"] == 2 * n
    assert max(sizes) == slices.INLINE_FLUSH_AT > slices.FLUSH_AT
    assert sorted(fns.COLLECTED["big slices"]) == sorted(2 * [x + 1 for x in range(n)])
