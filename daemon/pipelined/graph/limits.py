"""Effective threads/processes per stage: pipeline budgets, nested budgets, the daemon budget.

Rules (docs/config.md, Limits):

- A pipeline's budget is `min(max_threads, what the daemon has left)` (and the same for
  processes). Each stage asks for `threads` (default 1) or `processes`; an async stage asks for
  one thread whatever its `threads` (its concurrency is never cut); accumulators and nested
  containers ask for nothing themselves.
- A nested pipeline asks its parent for what its children ask in total, capped by its own
  `max_threads`/`max_processes`; what it gets is the budget its children share.
- When the asks of one level do not fit its budget, each is scaled by budget ÷ total asked,
  rounded down, at least 1 (so the limit can be exceeded); what remains of the budget is handed
  out one unit per stage per round, in file order, never beyond a stage's ask.
- `Allocation.cuts` lists every stage whose *explicit* `threads`/`processes` was cut: the
  caller logs each once.

`DaemonBudget` hands what remains of the daemon's limits to pipelines in the order they start;
a pipeline keeps what it got until it gives it back (drain, removal), it is never rescaled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.graph.model import EXTERNAL, Graph, Node

log = logging.getLogger("pipelined.limits")

Resource = Literal["threads", "processes"]
IsAsync = Callable[[StageSpec], bool]


def _never_async(stage: StageSpec) -> bool:
    return False


@dataclass(frozen=True)
class StageAllocation:
    threads: int  # effective; for an async stage: its concurrency (it uses one thread)
    processes: int
    requested_threads: int
    requested_processes: int
    is_async: bool = False

    @property
    def budget_threads(self) -> int:
        """Threads this stage takes from the budget (an async stage: one)."""
        return min(self.threads, 1) if self.is_async else self.threads


@dataclass(frozen=True)
class Cut:
    """A stage whose explicit `threads`/`processes` did not fit: log it once."""

    stage: str
    resource: Resource
    asked: int
    got: int

    @property
    def what(self) -> Resource:
        return self.resource

    def message(self) -> str:
        return (
            f'stage "{self.stage}" asked for {self.asked} {self.resource} but got {self.got}: '
            f"the limits (max_{self.resource}) do not fit every stage's request"
        )


@dataclass(frozen=True)
class Allocation:
    stages: dict[str, StageAllocation] = field(default_factory=dict)
    cuts: list[Cut] = field(default_factory=list)

    def totals(self) -> tuple[int, int]:
        """Threads and worker processes all stages use together (an async stage: one thread)."""
        threads = sum(s.budget_threads for s in self.stages.values())
        return threads, sum(s.processes for s in self.stages.values())


def share(asks: Sequence[int], budget: int) -> list[int]:
    """Split `budget` among `asks` (file order) by the Limits rule; an ask of 0 gets 0."""
    total = sum(asks)
    if total <= budget:
        return list(asks)
    grants = [max(1, ask * budget // total) if ask else 0 for ask in asks]
    remaining = budget - sum(grants)
    while remaining > 0:
        short = [i for i, ask in enumerate(asks) if grants[i] < ask]
        if not short:
            break
        for i in short[:remaining]:
            grants[i] += 1
        remaining -= min(remaining, len(short))
    return grants


def allocate(
    spec: PipelineSpec,
    graph: Graph,
    threads_available: int | None,
    processes_available: int | None,
    is_async: IsAsync = _never_async,
) -> Allocation:
    """Effective counts for every node of `graph` (None available: no daemon limit)."""
    threads = _budget(spec.max_threads, threads_available)
    processes = _budget(spec.max_processes, processes_available)
    allocator = _Allocator(graph, is_async)
    allocator.level(None, threads, processes)
    return Allocation(allocator.stages, allocator.cuts)


def pipeline_demand(spec: PipelineSpec, graph: Graph, is_async: IsAsync = _never_async) -> tuple[int, int]:
    """What a pipeline would use with no daemon limit: what to ask `DaemonBudget.take` for."""
    allocator = _Allocator(graph, is_async)
    top = graph.children(None)
    threads = sum(allocator.ask(n, "threads") for n in top)
    processes = sum(allocator.ask(n, "processes") for n in top)
    return min(threads, spec.max_threads), min(processes, spec.max_processes)


def _budget(pipeline_max: int, available: int | None) -> int:
    return pipeline_max if available is None else max(0, min(pipeline_max, available))


class _Allocator:
    def __init__(self, graph: Graph, is_async: IsAsync) -> None:
        self.graph = graph
        self.is_async = is_async
        self.stages: dict[str, StageAllocation] = {}
        self.cuts: list[Cut] = []

    def ask(self, node: Node, resource: Resource) -> int:
        """Budget units `node` asks its level for."""
        stage = node.stage
        if node.kind == "pipeline":
            total = sum(self.ask(child, resource) for child in self.graph.children(node.id))
            cap = stage.max_threads if resource == "threads" else stage.max_processes
            return total if cap is None else min(cap, total)
        if node.kind in ("accumulator", EXTERNAL):
            return 0
        if resource == "processes":
            return stage.requested_processes
        return min(stage.requested_threads, 1) if self.is_async(stage) else stage.requested_threads

    def level(self, parent: str | None, threads: int, processes: int) -> None:
        nodes = tuple(n for n in self.graph.children(parent) if n.kind != EXTERNAL)  # another pipeline's
        thread_grants = share([self.ask(n, "threads") for n in nodes], threads)
        process_grants = share([self.ask(n, "processes") for n in nodes], processes)
        for node, got_threads, got_processes in zip(nodes, thread_grants, process_grants, strict=True):
            if node.kind == "pipeline":
                self.stages[node.id] = StageAllocation(0, 0, 0, 0)
                self.level(node.id, got_threads, got_processes)
            else:
                self._stage(node, got_threads, got_processes)

    def _stage(self, node: Node, got_threads: int, got_processes: int) -> None:
        stage = node.stage
        if node.kind == "accumulator":
            self.stages[node.id] = StageAllocation(0, 0, 0, 0)
            return
        asked_threads, asked_processes = stage.requested_threads, stage.requested_processes
        if self.is_async(stage) and not stage.uses_processes:
            self.stages[node.id] = StageAllocation(asked_threads, 0, asked_threads, 0, is_async=True)
            return
        self.stages[node.id] = StageAllocation(got_threads, got_processes, asked_threads, asked_processes)
        if stage.threads is not None and not stage.uses_processes and got_threads < asked_threads:
            self.cuts.append(Cut(node.id, "threads", asked_threads, got_threads))
        if stage.processes is not None and got_processes < asked_processes:
            self.cuts.append(Cut(node.id, "processes", asked_processes, got_processes))


class DaemonBudget:
    """The daemon's `max_threads`/`max_processes`, handed out to pipelines as they start.

    Keys are pipeline names (or any string that names one running version, e.g.
    `"orders@3f2a..."`, when two versions overlap during a swap). `take` again with a key that
    holds something replaces that holding. None for a limit: unlimited.
    """

    def __init__(self, max_threads: int | None, max_processes: int | None) -> None:
        self.max_threads = max_threads
        self.max_processes = max_processes
        self._held: dict[str, tuple[int, int]] = {}
        self._used = [0, 0]  # threads, processes held in total (kept with _held: O(1) per call)
        self._over: set[Resource] = set()  # what is over its limit now (warned once per excess)
        self._lock = threading.Lock()

    def take(self, pipeline: str, threads_wanted: int, processes_wanted: int) -> tuple[int, int]:
        """Reserve up to what is wanted from what remains; returns what the pipeline may use."""
        with self._lock:
            self._set(pipeline, None)
            threads_left, processes_left = self._remaining()
            threads = threads_wanted if threads_left is None else max(0, min(threads_wanted, threads_left))
            processes = (
                processes_wanted if processes_left is None else max(0, min(processes_wanted, processes_left))
            )
            self._set(pipeline, (threads, processes))
            return threads, processes

    def hold(self, pipeline: str, threads: int, processes: int) -> None:
        """Record what a pipeline really uses (its `Allocation.totals()`; may exceed what it took:
        every stage gets at least one thread or process). The first time that takes the daemon
        past `max_threads` / `max_processes`, a warning says so (again only after it fell back
        within the limit)."""
        with self._lock:
            self._set(pipeline, (threads, processes))
            over = self._check_over(pipeline)
        for resource, used, limit in over:
            log.warning(
                "the pipelines use %d %s, more than the daemon's max_%s = %d: every stage gets at "
                "least one (config.md, Limits), so the limit does not bound them (pipeline %r took it "
                "past); raise [daemon] max_%s or run fewer stages",
                used, resource, resource, limit, pipeline, resource, extra={"pipeline": pipeline},
            )  # fmt: skip

    def _check_over(self, pipeline: str) -> list[tuple[Resource, int, int]]:
        newly: list[tuple[Resource, int, int]] = []
        limits: tuple[tuple[Resource, int | None, int], ...] = (
            ("threads", self.max_threads, self._used[0]),
            ("processes", self.max_processes, self._used[1]),
        )
        for resource, limit, used in limits:
            if limit is not None and used > limit:
                if resource not in self._over:
                    self._over.add(resource)
                    newly.append((resource, used, limit))
            else:
                self._over.discard(resource)
        return newly

    def give_back(self, pipeline: str) -> None:
        """Release what a pipeline holds (drained or removed); unknown keys are ignored."""
        with self._lock:
            self._set(pipeline, None)
            self._check_over(pipeline)

    def _set(self, pipeline: str, holding: tuple[int, int] | None) -> None:
        old = self._held.pop(pipeline, None)
        if old is not None:
            self._used[0] -= old[0]
            self._used[1] -= old[1]
        if holding is not None:
            self._held[pipeline] = holding
            self._used[0] += holding[0]
            self._used[1] += holding[1]

    def held(self, pipeline: str) -> tuple[int, int]:
        with self._lock:
            return self._held.get(pipeline, (0, 0))

    def remaining(self) -> tuple[int | None, int | None]:
        """What is still free (None: unlimited); negative never, even when overcommitted."""
        with self._lock:
            threads, processes = self._remaining()
        return (
            None if threads is None else max(0, threads),
            None if processes is None else max(0, processes),
        )

    def _remaining(self) -> tuple[int | None, int | None]:
        return (
            None if self.max_threads is None else self.max_threads - self._used[0],
            None if self.max_processes is None else self.max_processes - self._used[1],
        )
