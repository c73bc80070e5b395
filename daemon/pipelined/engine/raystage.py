"""A stage with `executor = "ray"`: feeder threads hand chunks to `pipelined.workers.ray_stage`.

The same runner as a `processes = N` stage (processstage.py: chunks taken, outcomes completed,
retries and dead letters here in the engine), with `replicas × max_in_flight` feeders so every
actor has `max_in_flight` batches queued or running, and chunks sized for a call that costs
about a millisecond (a round trip through the Ray driver process) instead of a pipe's tens of µs.
Its threads and actors take nothing from `max_threads` / `max_processes`.
"""

from __future__ import annotations

import threading
from typing import Any

from pipelined.config.spec import StageSpec
from pipelined.engine.counters import StageCounters
from pipelined.engine.processstage import ProcessStageRunner
from pipelined.engine.queues import StageQueue
from pipelined.engine.router import Target
from pipelined.engine.stage import StageServices
from pipelined.errors import StartError

MAX_TAKE = 1024
FIRST_TAKE = 1
CALL_BUDGET_S = 0.05  # a slow stage's calls are cut to about this much work


class RayStageRunner(ProcessStageRunner):
    uses_processes = False
    uses_ray = True

    def __init__(
        self, services: StageServices, spec: StageSpec, queue: StageQueue, target: Target, counters: StageCounters
    ) -> None:
        self.replicas = max(1, spec.replicas)
        feeders = self.replicas * max(1, spec.ray_options.max_in_flight)
        super().__init__(services, spec, queue, target, counters, feeders)

    def start(self) -> None:
        try:
            from pipelined.workers.ray_cluster import default_cluster
            from pipelined.workers.ray_stage import RayStage
        except ImportError as exc:
            raise StartError(f"stage {self.name!r}: executor = \"ray\" not supported: {exc}") from exc
        self.pool = RayStage(self.services.spec, self.spec, default_cluster())
        self.pool.start()
        for i in range(self.workers):
            name = f"{self.services.spec.name}:{self.name}:ray{i + 1}"
            t = threading.Thread(target=self._feed, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def executor_stats(self) -> dict[str, Any]:
        """`executor`, `replicas` (alive / wanted) and `in_flight_batches` for the stage's stats."""
        if self.pool is None:
            return {"executor": "ray", "replicas": {"alive": 0, "wanted": self.replicas}, "in_flight_batches": 0}
        return dict(self.pool.stats())

    def _take_size(self) -> int:
        """Like a process stage's (see there), with a call budget that amortises a Ray call."""
        per_item = self.per_item_s
        if per_item is None:
            limit = FIRST_TAKE
        else:
            limit = int(CALL_BUDGET_S / per_item) if per_item > 0 else MAX_TAKE
            if limit >= MAX_TAKE:
                return MAX_TAKE
        depth = self.queue.depth
        if depth == 0:
            return max(1, limit)
        return max(1, min(limit, -(-depth // self.replicas)))
