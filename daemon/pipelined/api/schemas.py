"""Response and request shapes of the HTTP API (docs/api.md), for the OpenAPI document only.

The `Control` returns plain dicts in exactly these shapes and the API sends them on unchanged
(encoded with orjson); these TypedDicts only tell Litestar what to write into
`/schema/openapi.json`. Keep them in step with the spec's api.md.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

PipelineState = Literal["starting", "running", "draining", "drained", "failed", "disabled"]
RunState = Literal["running", "completed", "failed", "cancelled"]
StageKindName = Literal["producer", "processor", "consumer", "accumulator", "pipeline"]
RouteName = Literal["direct", "round_robin", "broadcast", "weighted"]
GraphNodeKind = Literal["producer", "processor", "consumer", "accumulator", "pipeline", "external"]


class ErrorBody(TypedDict):
    status_code: int
    detail: str
    errors: NotRequired[list[str]]


class HealthStatus(TypedDict):
    status: Literal["ok", "stopping"]


class ReadyStatus(TypedDict):
    status: Literal["ready", "starting", "stopping"]


class PipelineSummary(TypedDict):
    name: str
    state: PipelineState
    file: str
    version: str | None
    stages: int
    error: str | None


class StageRow(TypedDict):
    name: str
    kind: StageKindName
    auto_start: bool
    threads: int
    processes: int
    requested_threads: int | None
    requested_processes: int | None
    upstream: list[str]
    downstream: list[str]


class PipelineLimits(TypedDict):
    max_threads: int | None
    max_processes: int | None
    max_retries: int | None


class LastReload(TypedDict):
    at: str
    ok: bool
    error: str | None


class PipelineDetail(TypedDict):
    name: str
    state: PipelineState
    file: str
    version: str | None
    error: str | None
    description: str | None
    limits: PipelineLimits
    loaded_at: str | None
    last_reload: LastReload | None
    stages: list[StageRow]


class TriggerRequest(TypedDict):
    """Producer stages take `args`, every other kind `items`; never both."""

    args: NotRequired[dict[str, Any]]
    items: NotRequired[list[Any]]


class TriggerAccepted(TypedDict):
    run: str
    pipeline: str
    stage: str


class RunItems(TypedDict):
    produced: int
    in_flight: int
    finished: int
    filtered: int
    dead_lettered: int


class Run(TypedDict):
    run: str
    pipeline: str
    stage: str
    state: RunState
    started_at: str
    finished_at: str | None
    items: RunItems
    error: str | None
    parent: str | None  # "<pipeline>/<run id>" of the run that sent a linked run's items, else null


class StateChange(TypedDict):
    state: PipelineState


class LatencyMs(TypedDict):
    p50: float
    p90: float
    p99: float


class StageStats(TypedDict):
    kind: StageKindName
    items_in: int
    items_out: int
    items_failed: int
    items_retried: int
    items_dropped: int
    items_dead_lettered: int
    queue_depth: int
    queue_capacity: int
    threads: int
    processes: int
    busy: int
    utilization: float
    throughput_per_s: float
    latency_ms: NotRequired[LatencyMs]


class RunCounts(TypedDict):
    started: int
    completed: int
    failed: int
    cancelled: int
    active: int


class PipelineStats(TypedDict):
    pipeline: str
    state: PipelineState
    version: str | None
    uptime_s: float
    runs: RunCounts
    bottleneck: str | None
    stages: dict[str, StageStats]


class DaemonInfo(TypedDict):
    version: str
    uptime_s: float
    pid: int
    pipelines: int
    threads: int
    processes: int
    rss_bytes: int


class DaemonStats(TypedDict):
    daemon: DaemonInfo
    pipelines: dict[str, PipelineStats]


class DeadLetter(TypedDict):
    id: str
    run: str | None
    stage: str
    at: str
    attempts: int
    error: str
    item: Any


class GraphNode(TypedDict):
    id: str
    kind: GraphNodeKind  # "external": a stage of another pipeline that a link leads to
    threads: int
    processes: int
    auto_start: bool
    children: NotRequired[dict[str, Any]]
    pipeline: NotRequired[str]  # kind "external" (a link target): the other pipeline
    stage: NotRequired[str]  # kind "external": its stage


GraphEdge = TypedDict("GraphEdge", {"from": str, "to": str, "route": RouteName})


class GraphJson(TypedDict):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class PipelineNameState(TypedDict):
    name: str
    state: PipelineState


PipelineLink = TypedDict("PipelineLink", {"from": str, "to": str})


class DaemonGraphJson(TypedDict):
    """`GET /graph`: every pipeline and the links (`pipeline/stage` → `pipeline/stage`) between them."""

    pipelines: list[PipelineNameState]
    links: list[PipelineLink]


class ReloadResult(TypedDict):
    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: list[str]
    failed: dict[str, str]


class Removed(TypedDict):
    name: str
    removed: bool
