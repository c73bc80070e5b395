"""What outlives one version of a pipeline: run ids and history, stage counters, dead letters."""

from __future__ import annotations

import threading
from pathlib import Path

from pipelined.engine.counters import StageCounters
from pipelined.engine.deadletters import DeadLetterStore
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
        self._lock = threading.Lock()

    def counters(self, stage: str) -> StageCounters:
        """The counters of (this pipeline, stage), created on first use."""
        with self._lock:
            counters = self._counters.get(stage)
            if counters is None:
                counters = self._counters[stage] = StageCounters()
            return counters

    def close(self) -> None:
        self.dead_letters.close()
