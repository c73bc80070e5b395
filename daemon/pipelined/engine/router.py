"""Where a stage's outputs go: a tree of targets built once from the Graph.

A `Target` takes a list of items of one run. `QueueTarget` puts them into a stage's input
queue (counting them in flight first); `Router` splits them round_robin / broadcast / weighted
(per item, by slicing); `ContainerTarget` counts them on a nested pipeline's stats row and
passes them on (into its entrance, or out through its exit); `Terminal` counts them finished;
a link to another pipeline is a `pipelined.engine.links.LinkTarget` (made by `link_of`).
`send` returns how many items ended at a terminal (the caller adds that to its run).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pipelined.engine.counters import StageCounters
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.runs import Run
from pipelined.graph.model import EXTERNAL, Graph

DropHandler = Callable[[str, list[tuple[Run, list[Any]]], str], None]


class Target(ABC):
    @abstractmethod
    def send(self, run: Run, items: list[Any]) -> int:
        """Deliver `items` of `run`; returns how many items ended here (terminal) or went on."""

    def idle(self) -> bool:
        """True when a worker downstream waits for work (flush now rather than buffer)."""
        return True

    def may_reject(self) -> bool:
        return False


class Terminal(Target):
    def send(self, run: Run, items: list[Any]) -> int:
        return len(items)


class InlineRunner(Protocol):
    def try_inline(self, run: Run, items: list[Any]) -> bool: ...


class QueueTarget(Target):
    """A stage's input queue — or, when the stage can take the chunk right now in the
    sender's thread (see ThreadStage.try_inline), a direct call."""

    def __init__(self, queue: StageQueue, on_drop: DropHandler, runner_of: Callable[[str], Any] = lambda _: None) -> None:
        self.queue = queue
        self.on_drop = on_drop
        self._runner_of = runner_of
        self._runner: InlineRunner | None | bool = False  # False: not looked up yet

    def _inline_runner(self) -> InlineRunner | None:
        runner = self._runner
        if runner is False:
            found = self._runner_of(self.queue.stage)
            runner = self._runner = found if hasattr(found, "try_inline") else None
        return runner  # type: ignore[return-value]

    def send(self, run: Run, items: list[Any]) -> int:
        if not items:
            return 0
        n = len(items)
        run.settle(enter=n)
        runner = self._inline_runner()
        if runner is not None and runner.try_inline(run, items):
            return 0
        try:
            dropped = self.queue.put(Chunk(run, items))
        except QueueRejected:
            run.settle(leave=n)
            raise
        except QueueAbandoned as exc:  # the drain deadline passed: these cannot go anywhere now
            left = items if exc.left is None else exc.left  # what got in, the drain dead-lettered
            self.on_drop(self.queue.stage, [(run, left)], "shutdown")
            return 0
        if dropped:
            self.on_drop(self.queue.stage, dropped, "dropped")
        return 0

    def idle(self) -> bool:
        q = self.queue
        return q.idle_takers > q.pending_wakeups and self._inline_runner() is None

    def may_reject(self) -> bool:
        return self.queue.on_full == "reject"


class ContainerTarget(Target):
    """A nested pipeline's entrance or exit: counted on its stats row, then passed on."""

    def __init__(self, counters: StageCounters, counter: str, inner: Target) -> None:
        self.counters = counters
        self.counter = counter
        self.inner = inner

    def send(self, run: Run, items: list[Any]) -> int:
        if items:
            self.counters.add(self.counter, len(items))
        return self.inner.send(run, items)

    def idle(self) -> bool:
        return self.inner.idle()

    def may_reject(self) -> bool:
        return self.inner.may_reject()


class Router(Target):
    def __init__(self, mode: str, targets: Sequence[Target], weights: Sequence[int] = ()) -> None:
        self.mode = mode
        self.targets = list(targets)
        self._offset = itertools.count()
        self._pattern = _weighted_pattern(weights) if mode == "weighted" else []
        self._pattern_pos = 0

    def send(self, run: Run, items: list[Any]) -> int:
        if not items:
            return 0
        k = len(self.targets)
        if self.mode == "broadcast":
            return sum(t.send(run, list(items)) for t in self.targets)
        if self.mode == "weighted":
            return self._send_weighted(run, items)
        start = next(self._offset) % k
        finished = 0
        for i in range(k):
            part = items[i::k]
            if part:
                finished += self.targets[(start + i) % k].send(run, part)
        return finished

    def _send_weighted(self, run: Run, items: list[Any]) -> int:
        parts: list[list[Any]] = [[] for _ in self.targets]
        pattern = self._pattern
        pos = self._pattern_pos
        for item in items:
            parts[pattern[pos]].append(item)
            pos = (pos + 1) % len(pattern)
        self._pattern_pos = pos
        return sum(t.send(run, part) for t, part in zip(self.targets, parts, strict=True) if part)

    def idle(self) -> bool:
        return any(t.idle() for t in self.targets)

    def may_reject(self) -> bool:
        return any(t.may_reject() for t in self.targets)


def _weighted_pattern(weights: Sequence[int]) -> list[int]:
    """Smooth weighted round robin: indices in proportion to weights, evenly interleaved."""
    total = sum(weights)
    current = [0] * len(weights)
    pattern: list[int] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        pattern.append(best)
    return pattern or [0]


def _no_runner(stage: str) -> None:
    return None


class RouterBuilder:
    """Builds the output Target of every node of a Graph (nested pipelines resolved)."""

    def __init__(
        self,
        graph: Graph,
        queue_of: Callable[[str], StageQueue],
        counters_of: Callable[[str], StageCounters],
        on_drop: DropHandler,
        runner_of: Callable[[str], Any] = lambda _: None,
        link_of: Callable[[str], Target] | None = None,
    ) -> None:
        self.runner_of = runner_of
        self.link_of = link_of
        self.graph = graph
        self.queue_of = queue_of
        self.counters_of = counters_of
        self.on_drop = on_drop

    def outputs(self, node_id: str) -> Target:
        """Where items emitted by `node_id` go (for a nested pipeline: what leaves it)."""
        graph = self.graph
        node = graph.node(node_id)
        if node.kind == "pipeline":
            edges = [e for e in graph.out_edges(node_id) if graph.node(e.dst).parent != node_id]
            mode = "round_robin"
        else:
            edges = list(graph.out_edges(node_id))
            mode = node.stage.effective_fanout
        targets = [self._towards(node_id, e.dst) for e in edges]
        if not targets:
            return Terminal()
        if len(targets) == 1:
            return targets[0]
        weights = [int((node.stage.weights or {}).get(e.dst, 1)) for e in edges]
        return Router(mode, targets, weights)

    def entrance(self, node_id: str, inline: bool = True) -> Target:
        """Items sent *to* `node_id`: its queue, or a nested pipeline's entrance.

        `inline=False` for `ctx.emit_to` targets: those may point upstream (a cycle the graph
        does not show), so they always go through the queue and never take a stage's lock.
        """
        graph = self.graph
        node = graph.node(node_id)
        if node.kind == EXTERNAL:
            if self.link_of is None:
                raise ValueError(f"no way to reach {node_id!r}: this runtime has no links")
            return self.link_of(node_id)
        if node.kind != "pipeline":
            return QueueTarget(self.queue_of(node_id), self.on_drop, self.runner_of if inline else _no_runner)
        entry = list(graph.entrance(node_id))
        targets = [self.entrance(e.dst, inline) for e in entry]
        counters = self.counters_of(node_id)
        if not targets:
            inner: Target = self.outputs(node_id)
        elif len(targets) == 1:
            inner = targets[0]
        else:
            weights = [int((node.stage.weights or {}).get(e.dst, 1)) for e in entry]
            inner = Router(node.stage.effective_fanout, targets, weights)
        return ContainerTarget(counters, "items_in", inner)

    def _towards(self, src: str, dst: str) -> Target:
        if self.graph.node(dst).kind == "pipeline" and self.graph.is_ancestor(dst, src):
            return ContainerTarget(self.counters_of(dst), "items_out", self.outputs(dst))
        return self.entrance(dst)
