"""What outlives one version of a pipeline: run ids and history, stage counters, dead letters,
and its disk buffer (which a new version takes over)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipelined.config.spec import StageSpec
from pipelined.engine.counters import StageCounters
from pipelined.engine.deadletters import DEFAULT_FILES, DeadLetterStore
from pipelined.engine.disk_buffer import DiskBuffer, RestoreFailed, buffer_path
from pipelined.engine.gate import Slots, StageGate, TokenBucket
from pipelined.engine.runs import RunTracker


class PipelineBook:
    """Lives as long as the pipeline's name; every PipelineRuntime of that name shares it."""

    def __init__(self, name: str, state_dir: Path | str | None, *, dead_letter_files: int = DEFAULT_FILES) -> None:
        self.name = name
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.dead_letters = DeadLetterStore(name, self.state_dir, files=dead_letter_files)
        # run ids never repeat: a high-water mark in the state dir (engine/runids.py), and never
        # one that a dead letter from before a restart names
        self.runs = RunTracker(name, first=self.dead_letters.highest_run_number() + 1, state_dir=self.state_dir)
        self._counters: dict[str, StageCounters] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._slots: dict[str, Slots] = {}
        self._lock = threading.Lock()
        self.buffer: DiskBuffer | None = None  # open while a version uses it (or has left items in it)

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

    def open_buffer(self, sync: str) -> DiskBuffer:
        """The pipeline's disk buffer, opened (and checked) on first use; BufferCorrupt /
        BufferOpenError when it cannot be. Reopened when `sync` changed."""
        if self.state_dir is None:
            raise RuntimeError('buffer = "disk" needs a state dir')
        buffer = self.buffer
        if buffer is not None and buffer.sync != sync:
            buffer.close()
            buffer = self.buffer = None
        if buffer is None:
            buffer = self.buffer = DiskBuffer.for_pipeline(self.state_dir, self.name, sync)
            self.runs.reserve(buffer.next_run)
        return buffer

    def buffer_stats(self, kind: str) -> dict[str, Any]:
        """Pipeline stats' "buffer": the open buffer's numbers, or zeros of `kind`."""
        buffer = self.buffer
        if buffer is not None:
            return buffer.stats()
        return {"kind": kind, "items": 0, "bytes": 0, "oldest_age_s": 0.0, "commits_per_s": 0.0, "error": None}

    def leftover_buffer(self) -> DiskBuffer | None:
        """A memory version's start: the buffer an earlier disk version left items in, if any."""
        if self.buffer is None and self.state_dir is not None and buffer_path(self.state_dir, self.name).exists():
            return self.open_buffer("normal")
        return self.buffer

    def close_buffer(self, *, remove: bool = False) -> None:
        buffer, self.buffer = self.buffer, None
        if buffer is not None:
            buffer.close(remove=remove)

    def discard_buffer(self) -> int:
        """The pipeline is deleted: dead-letter what its disk buffer still holds (error
        "shutdown") and remove the file; how many items that was."""
        buffer = self.buffer if self.buffer is not None else self.leftover_buffer()
        if buffer is None:
            return 0
        count = 0
        for entry in buffer.entries(buffer.begin_replay()):
            try:
                items = entry.items()
            except RestoreFailed:
                items = [{"buffered_entry": entry.id, "index": i} for i in range(entry.count)]
            self.dead_letters.add_many(entry.run, entry.stage, entry.replays, "shutdown", items)
            self.counters(entry.stage).add("items_dead_lettered", len(items))
            count += len(items)
        self.close_buffer(remove=True)
        return count

    def close(self) -> None:
        self.close_buffer()
        self.dead_letters.close()
