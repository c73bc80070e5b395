"""A runtime as api.md shows it: pipeline stats and the stage rows of GET /pipelines/{name}."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.engine.book import PipelineBook
from pipelined.engine.counters import COUNTER_NAMES
from pipelined.engine.queues import StageQueue
from pipelined.engine.stats import StageMeter
from pipelined.graph.model import Graph


class RuntimeView(Protocol):
    """What the views read of a runtime (`PipelineRuntime` is the one)."""

    @property
    def spec(self) -> PipelineSpec: ...

    @property
    def graph(self) -> Graph: ...

    @property
    def book(self) -> PipelineBook: ...

    @property
    def allocation(self) -> Any: ...

    @property
    def state(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    @property
    def meters(self) -> Mapping[str, StageMeter]: ...

    @property
    def queues(self) -> Mapping[str, StageQueue]: ...

    @property
    def stages(self) -> Mapping[str, Any]: ...

    def threads_of(self, stage: StageSpec) -> int: ...

    def buffer_stats(self) -> dict[str, Any]: ...

    def processes_of(self, stage: StageSpec) -> int: ...

IDLE_UTILIZATION = 0.001


def pipeline_stats(rt: RuntimeView) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for stage in rt.spec.walk():
        meter = rt.meters.get(stage.name)
        if meter is None:
            continue
        queue = rt.queues.get(stage.name)
        row = meter.row(
            queue.depth if queue else 0,
            queue.capacity if queue else 0,
            rt.threads_of(stage),
            rt.processes_of(stage),
        )
        busy_now = getattr(rt.stages.get(stage.name), "busy_now", None)
        if busy_now is not None:
            row["busy"] = busy_now()
        executor_stats = getattr(rt.stages.get(stage.name), "executor_stats", None)
        if executor_stats is not None:  # executor = "ray": executor, replicas, in_flight_batches
            row.update(executor_stats())
        stages[stage.name] = row
    busiest = max(stages.items(), key=lambda kv: kv[1]["utilization"], default=None)
    bottleneck = busiest[0] if busiest and busiest[1]["utilization"] > IDLE_UTILIZATION else None
    return {
        "pipeline": rt.spec.name,
        "state": rt.state,
        "version": rt.spec.version,
        "uptime_s": round(time.monotonic() - rt.started_at, 3),
        "runs": rt.book.runs.counts(),
        "bottleneck": bottleneck,
        "stages": stages,
        "buffer": rt.buffer_stats(),
    }


def stage_rows(rt: RuntimeView) -> list[dict[str, Any]]:
    rows = []
    alloc_stages = getattr(rt.allocation, "stages", {}) if rt.allocation is not None else {}
    for stage in rt.spec.walk():
        alloc = alloc_stages.get(stage.name)
        builtin = stage.kind in ("accumulator", "pipeline")
        rows.append(
            {
                "name": stage.name,
                "kind": stage.kind,
                "auto_start": stage.auto_start if stage.kind == "producer" else False,
                "threads": rt.threads_of(stage),
                "processes": rt.processes_of(stage),
                "requested_threads": (
                    int(alloc.requested_threads) if alloc is not None else (0 if builtin else stage.requested_threads)
                ),
                "requested_processes": (
                    int(alloc.requested_processes) if alloc is not None else stage.requested_processes
                ),
                "upstream": list(rt.graph.upstream(stage.name)),
                "downstream": list(rt.graph.downstream(stage.name)),
            }
        )
    return rows


def stopped_stage_stats(spec: PipelineSpec, book: PipelineBook) -> dict[str, Any]:
    """Stats rows of a pipeline with no runtime (disabled, failed to start): the surviving
    counters of every stage, nothing queued, no workers, idle."""
    stages: dict[str, Any] = {}
    for stage in spec.walk():
        totals = book.counters(stage.name).totals()
        row: dict[str, Any] = {"kind": stage.kind}
        row.update({name: int(totals[name]) for name in COUNTER_NAMES})
        row.update(
            {
                "queue_depth": 0,
                "queue_capacity": 0 if stage.kind in ("producer", "pipeline") else stage.queue_size,
                "threads": 0,
                "processes": 0,
                "busy": 0,
                "utilization": 0.0,
                "throughput_per_s": 0.0,
                "throttled_s": round(totals["throttled_s"], 3),
            }
        )
        if spec.track_latency:
            row["latency_ms"] = {"p50": 0.0, "p90": 0.0, "p99": 0.0}
        stages[stage.name] = row
    return stages
