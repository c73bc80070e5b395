"""`GET /metrics`: a prometheus_client Collector over what the `Control` reports.

Nothing is counted twice: every sample is read, at scrape time, from `Control.daemon_stats()`,
`Control.list_pipelines()` and `Control.reload_counts()` (`{pipeline: {"ok": n, "failed": m}}`).
`render_metrics(control)` is what the API serves: the supervisor returns data, the API renders it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelined.supervisor.control import Control

CONTENT_TYPE = "text/plain; version=0.0.4"  # Litestar appends "; charset=utf-8"
PIPELINE_STATES = ("starting", "running", "draining", "drained", "failed", "disabled")
RUN_STATES = ("started", "completed", "failed", "cancelled")
ITEM_OUTCOMES = {
    "in": "items_in",
    "out": "items_out",
    "failed": "items_failed",
    "retried": "items_retried",
    "dropped": "items_dropped",
    "dead_lettered": "items_dead_lettered",
}
STAGE_GAUGES = {
    "queue_depth": ("pipelined_stage_queue_depth", "Items waiting in the stage's input queue"),
    "queue_capacity": ("pipelined_stage_queue_capacity", "Capacity of the stage's input queue"),
    "busy": ("pipelined_stage_busy", "Workers of the stage inside the callable right now"),
    "threads": ("pipelined_stage_threads", "Effective threads of the stage"),
    "processes": ("pipelined_stage_processes", "Effective worker processes of the stage"),
    "utilization": ("pipelined_stage_utilization", "Fraction of worker time inside the callable (60 s)"),
    "throughput_per_s": ("pipelined_stage_throughput_per_second", "Items per second over the last 60 s"),
    "in_flight_batches": ("pipelined_stage_in_flight_batches", "Batches sent to the stage's Ray actors, not yet back"),
}
BUFFER_GAUGES = {
    "items": ("pipelined_buffer_items", "Items stored in the pipeline's disk buffer"),
    "bytes": ("pipelined_buffer_bytes", "Size of the disk buffer file and its WAL"),
    "oldest_age_s": ("pipelined_buffer_oldest_age_seconds", "Age of the oldest stored item"),
    "commits_per_s": ("pipelined_buffer_commits_per_second", "Disk buffer commits per second (last 5 s)"),
}
DAEMON_GAUGES = {
    "uptime_s": ("pipelined_daemon_uptime_seconds", "Seconds since the daemon started"),
    "pipelines": ("pipelined_daemon_pipelines", "Pipelines loaded"),
    "threads": ("pipelined_daemon_threads", "Stage worker threads running now"),
    "processes": ("pipelined_daemon_processes", "Stage worker processes running now"),
    "rss_bytes": ("pipelined_daemon_rss_bytes", "Resident memory of the daemon"),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


class ControlCollector(Collector):
    """Produces every pipelined_* family from one consistent read of the Control."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def collect(self) -> Iterator[Metric]:
        stats = self.control.daemon_stats()
        pipelines = self.control.list_pipelines()
        yield from self._daemon(stats.get("daemon") or {})
        yield from self._pipeline_states(pipelines)
        per_pipeline: Mapping[str, Any] = stats.get("pipelines") or {}
        yield from self._runs(per_pipeline)
        yield from self._stages(per_pipeline)
        yield from self._buffers(per_pipeline)
        yield from self._reloads()

    def _daemon(self, daemon: Mapping[str, Any]) -> Iterator[Metric]:
        info = GaugeMetricFamily("pipelined_build_info", "pipelined version", labels=["version"])
        info.add_metric([str(daemon.get("version", ""))], 1.0)
        yield info
        for key, (name, doc) in DAEMON_GAUGES.items():
            value = _number(daemon.get(key))
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

    def _pipeline_states(self, pipelines: list[Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "pipelined_pipeline_up", "1 while the pipeline is running", labels=["pipeline"]
        )
        state = GaugeMetricFamily(
            "pipelined_pipeline_state", "1 for the pipeline's current state", labels=["pipeline", "state"]
        )
        for row in pipelines:
            name, current = str(row.get("name")), str(row.get("state"))
            up.add_metric([name], 1.0 if current == "running" else 0.0)
            for candidate in PIPELINE_STATES:
                state.add_metric([name, candidate], 1.0 if candidate == current else 0.0)
        yield up
        yield state

    def _runs(self, per_pipeline: Mapping[str, Any]) -> Iterator[Metric]:
        total = CounterMetricFamily("pipelined_runs", "Runs by final state", labels=["pipeline", "state"])
        active = GaugeMetricFamily("pipelined_runs_active", "Runs still going", labels=["pipeline"])
        uptime = GaugeMetricFamily(
            "pipelined_pipeline_uptime_seconds", "Seconds since this version started", labels=["pipeline"]
        )
        dead = CounterMetricFamily("pipelined_dead_letters", "Dead letters recorded", labels=["pipeline"])
        for name, pstats in per_pipeline.items():
            runs = pstats.get("runs") or {}
            for run_state in RUN_STATES:
                total.add_metric([name, run_state], _number(runs.get(run_state)) or 0.0)
            active.add_metric([name], _number(runs.get("active")) or 0.0)
            if (seconds := _number(pstats.get("uptime_s"))) is not None:
                uptime.add_metric([name], seconds)
            stages = (pstats.get("stages") or {}).values()
            dead.add_metric([name], sum(_number(s.get("items_dead_lettered")) or 0.0 for s in stages))
        yield from (total, active, uptime, dead)

    def _stages(self, per_pipeline: Mapping[str, Any]) -> Iterator[Metric]:
        labels = ["pipeline", "stage"]
        items = CounterMetricFamily(
            "pipelined_stage_items", "Items per stage by outcome", labels=[*labels, "outcome"]
        )
        gauges = {
            key: GaugeMetricFamily(name, doc, labels=labels) for key, (name, doc) in STAGE_GAUGES.items()
        }
        latency = GaugeMetricFamily(
            "pipelined_stage_latency_seconds", "Queue-to-done latency quantiles", labels=[*labels, "quantile"]
        )
        throttled = CounterMetricFamily(
            "pipelined_stage_throttled_seconds",
            "Time the stage's workers waited for a rate_limit token",
            labels=labels,
        )
        replicas = GaugeMetricFamily(
            "pipelined_stage_replicas", "Ray actors of an executor = \"ray\" stage", labels=[*labels, "state"]
        )
        for pipeline, pstats in per_pipeline.items():
            for stage, sstats in (pstats.get("stages") or {}).items():
                for state, count in (sstats.get("replicas") or {}).items():
                    if (value := _number(count)) is not None:
                        replicas.add_metric([pipeline, stage, state], value)
                for outcome, key in ITEM_OUTCOMES.items():
                    items.add_metric([pipeline, stage, outcome], _number(sstats.get(key)) or 0.0)
                throttled.add_metric([pipeline, stage], _number(sstats.get("throttled_s")) or 0.0)
                for key, family in gauges.items():
                    if (value := _number(sstats.get(key))) is not None:
                        family.add_metric([pipeline, stage], value)
                for quantile, ms in (sstats.get("latency_ms") or {}).items():
                    if (value := _number(ms)) is not None:
                        latency.add_metric([pipeline, stage, "0." + quantile.lstrip("p")], value / 1000)
        yield items
        yield throttled
        yield from gauges.values()
        yield replicas
        yield latency

    def _buffers(self, per_pipeline: Mapping[str, Any]) -> Iterator[Metric]:
        gauges = {
            key: GaugeMetricFamily(name, doc, labels=["pipeline", "kind"]) for key, (name, doc) in BUFFER_GAUGES.items()
        }
        available = GaugeMetricFamily(
            "pipelined_buffer_available", "0 while the disk buffer refuses new items", labels=["pipeline", "kind"]
        )
        for pipeline, pstats in per_pipeline.items():
            buffer = pstats.get("buffer") or {}
            kind = str(buffer.get("kind", "memory"))
            for key, family in gauges.items():
                if (value := _number(buffer.get(key))) is not None:
                    family.add_metric([pipeline, kind], value)
            available.add_metric([pipeline, kind], 0.0 if buffer.get("error") else 1.0)
        yield from gauges.values()
        yield available

    def _reloads(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily("pipelined_reloads", "Reloads by result", labels=["pipeline", "result"])
        counts: Mapping[str, Mapping[str, Any]] = self.control.reload_counts()
        for pipeline, by_result in counts.items():
            for result, count in by_result.items():
                reloads.add_metric([pipeline, str(result)], _number(count) or 0.0)
        yield reloads


def render_metrics(control: Control) -> bytes:
    """The Prometheus text exposition of everything the control reports."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlCollector(control))
    return generate_latest(registry)
