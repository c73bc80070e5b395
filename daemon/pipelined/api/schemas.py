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
    """Producer stages take `args`, every other kind `items`; never both. `priority` (−10..10,
    default: a producer's `priority` key, else 0): every queue serves higher priorities first."""

    args: NotRequired[dict[str, Any]]
    items: NotRequired[list[Any]]
    priority: NotRequired[int]


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
    priority: int
    state: RunState
    started_at: str
    finished_at: str | None
    items: RunItems
    error: str | None
    recovered: bool  # replayed from a disk buffer after a restart
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
    throttled_s: float
    latency_ms: NotRequired[LatencyMs]


class RunCounts(TypedDict):
    started: int
    completed: int
    failed: int
    cancelled: int
    active: int


class BufferStats(TypedDict):
    kind: Literal["memory", "disk"]
    items: int  # items stored (disk), waiting to finish
    bytes: int  # the buffer file and its WAL
    oldest_age_s: float  # age of the oldest stored item
    commits_per_s: float  # over the last 5 s
    error: str | None  # why new items are refused now (disk full, unwritable), else null
    sync: NotRequired[Literal["normal", "full"]]


class PipelineStats(TypedDict):
    pipeline: str
    state: PipelineState
    version: str | None
    uptime_s: float
    runs: RunCounts
    bottleneck: str | None
    stages: dict[str, StageStats]
    buffer: BufferStats


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
    traceback: str | None
    item: Any
    truncated: bool


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
