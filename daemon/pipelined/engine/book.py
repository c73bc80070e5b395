"""What outlives one version of a pipeline: run ids and history, stage counters, dead letters."""

from __future__ import annotations

import threading
from pathlib import Path

from pipelined.config.spec import StageSpec
from pipelined.engine.counters import StageCounters
from pipelined.engine.deadletters import DeadLetterStore
from pipelined.engine.gate import Slots, StageGate, TokenBucket
from pipelined.engine.runs import RunTracker


class PipelineBook:
    """Lives as long as the pipeline's name; every PipelineRuntime of that name shares it."""

    def __init__(self, name: str, state_dir: Path | str | None) -> None:
        self.name = name
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.dead_letters = DeadLetterStore(name, self.state_dir)
        # run ids never repeat: a high-water mark in the state dir (engine/runids.py), and never
        # one that a dead letter from before a restart names
        self.runs = RunTracker(name, first=self.dead_letters.highest_run_number() + 1, state_dir=self.state_dir)
        self._counters: dict[str, StageCounters] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._slots: dict[str, Slots] = {}
        self._lock = threading.Lock()

    def counters(self, stage: str) -> StageCounters:
        """The counters of (this pipeline, stage), created on first use."""
        with self._lock:
            counters = self._counters.get(stage)
            if counters is None:
                counters = self._counters[stage] = StageCounters()
            return counters

    def gate(self, stage: StageSpec, *, slots: bool = True, one_item_per_slot: bool = False) -> StageGate | None:
        """The `rate_limit` / `concurrency` gate of a stage (None when it sets neither). Its token
        bucket and slots outlive the version, so a reload neither refills the bucket nor adds
        slots; they are replaced when the stage's setting changes. `slots=False`: the caller
        enforces `concurrency` itself (an async stage's coroutine slots)."""
        counters = self.counters(stage.name)
        with self._lock:
            bucket = self._buckets.get(stage.name)
            if stage.rate_limit is None:
                bucket = None
            elif bucket is None or bucket.rate != stage.rate_limit:
                bucket = self._buckets[stage.name] = TokenBucket(stage.rate_limit, counters)
            held = self._slots.get(stage.name)
            if stage.concurrency is None or not slots:
                held = None
            elif held is None or held.limit != stage.concurrency:
                held = self._slots[stage.name] = Slots(stage.concurrency)
        if bucket is None and held is None:
            return None
        return StageGate(bucket, held, one_item_per_slot=one_item_per_slot)

    def close(self) -> None:
        self.dead_letters.close()
