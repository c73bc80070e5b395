"""Frozen, typed values that a pipeline file parses into (see docs/config.md).

`pipelined.config.load` builds these from TOML, once; nothing after it reads files. Per-stage
overrides (`queue_size`, `on_full`, `max_retries`, `retry_backoff`) are already resolved against
the pipeline's values, so the runtime never looks them up twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Problem and Severity live in pipelined.errors (ConfigInvalid carries them); re-exported here
from pipelined.errors import Problem as Problem
from pipelined.errors import Severity as Severity

StageKind = Literal["producer", "processor", "consumer", "accumulator", "pipeline"]
OnFull = Literal["block", "drop_oldest", "reject"]
Fanout = Literal["round_robin", "broadcast", "weighted"]
ProcessMode = Literal["pool", "fork_per_item"]
StartMethod = Literal["fork", "forkserver", "spawn"]
NestedMode = Literal["sequential", "parallel"]
Executor = Literal["local", "ray"]

STAGE_KINDS: tuple[str, ...] = ("producer", "processor", "consumer", "accumulator", "pipeline")


@dataclass(frozen=True)
class Hooks:
    """`module:function` references; None when not set."""

    before_run: str | None = None
    after_run: str | None = None
    before_fork: str | None = None
    after_fork: str | None = None
    on_error: str | None = None


@dataclass(frozen=True)
class RayOptions:
    """`ray_options` of an `executor = "ray"` stage: what each actor asks of the cluster."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None  # bytes
    resources: Mapping[str, float] = field(default_factory=dict)
    max_in_flight: int = 2  # batches per replica


@dataclass(frozen=True)
class RateLimit:
    """`rate_limit = "N/s" | "N/min" | "N/h"`: a token bucket of `count` tokens refilled over
    `period_s` (a burst of `count`, then `count / period_s` calls per second)."""

    count: int
    period_s: float
    text: str  # as written, for messages and the API

    @property
    def per_second(self) -> float:
        return self.count / self.period_s


@dataclass(frozen=True, eq=True)
class StageSpec:
    name: str
    kind: StageKind = "processor"
    call: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = None  # None: not set in the file (counts as 1, never warned about)
    processes: int | None = None  # None: runs in threads
    process_mode: ProcessMode = "pool"
    start_method: StartMethod = "forkserver"
    max_items_per_worker: int = 0
    auto_start: bool = True
    trigger_args: tuple[str, ...] | None = None  # producers: the only args a trigger may set (None: any)
    to: tuple[str, ...] | None = None
    from_: tuple[str, ...] | None = None
    fanout: Fanout | None = None  # None: default (round_robin; broadcast for a parallel block)
    weights: Mapping[str, int] | None = None
    queue_size: int = 1000
    on_full: OnFull = "block"
    max_retries: int = 3
    retry_backoff: float = 0.1
    max_size: int = 100
    max_wait: float | None = None
    mode: NestedMode = "sequential"
    max_threads: int | None = None  # kind = "pipeline" only
    max_processes: int | None = None  # kind = "pipeline" only
    hooks: Hooks = field(default_factory=Hooks)
    stages: tuple[StageSpec, ...] = ()  # kind = "pipeline" only
    line: int | None = None  # line of this stage's `[[stage]]` header, when known
    executor: Executor = "local"
    replicas: int = 1  # executor = "ray" only: actors
    ray_options: RayOptions = field(default_factory=RayOptions)
    rate_limit: RateLimit | None = None  # processors and consumers: calls per period, all workers
    concurrency: int | None = None  # processors and consumers: items in progress at once
    priority: int = 0  # producers: the priority of the runs they start (a trigger's overrides it)

    @property
    def uses_ray(self) -> bool:
        return self.executor == "ray"

    @property
    def uses_processes(self) -> bool:
        return self.processes is not None

    @property
    def requested_threads(self) -> int:
        return 0 if self.processes is not None or self.uses_ray else (self.threads or 1)

    @property
    def requested_processes(self) -> int:
        return self.processes or 0

    @property
    def effective_fanout(self) -> Fanout:
        if self.fanout is not None:
            return self.fanout
        return "broadcast" if self.kind == "pipeline" and self.mode == "parallel" else "round_robin"

    def walk(self) -> Iterator[StageSpec]:
        """This stage, then its nested stages depth-first in file order."""
        yield self
        for child in self.stages:
            yield from child.walk()


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    file: Path
    version: str  # first 12 hex digits of the SHA-256 of the file's bytes
    stages: tuple[StageSpec, ...]
    description: str = ""
    enabled: bool = True
    max_threads: int = 5
    max_processes: int = 2
    max_retries: int = 3
    retry_backoff: float = 0.1
    queue_size: int = 1000
    on_full: OnFull = "block"
    track_latency: bool = False
    drain_timeout: float | None = None  # None: the daemon's drain_timeout
    buffer: str = "memory"  # "memory" | "disk" (config.md, Durable buffer)
    buffer_sync: str = "normal"  # "normal" | "full": PRAGMA synchronous of the disk buffer
    python_path: tuple[Path, ...] = ()  # absolute
    hooks: Hooks = field(default_factory=Hooks)
    priority_max_wait: float = 30.0  # an item queued this long is served next, whatever its priority
    # (stage, "pipeline/stage") for each literal `ctx.emit_to("pipeline/stage", ...)` of a call
    # (links in `to` are edges of the graph); found when the calls are checked
    emitted_links: tuple[tuple[str, str], ...] = ()

    def walk(self) -> Iterator[StageSpec]:
        """Every stage, nested ones included, depth-first in file order."""
        for stage in self.stages:
            yield from stage.walk()

    def stage(self, name: str) -> StageSpec | None:
        return next((s for s in self.walk() if s.name == name), None)
