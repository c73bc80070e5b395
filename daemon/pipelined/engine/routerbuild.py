"""Builds the output Target of every node of a Graph (nested pipelines resolved; a link, an
edge to an `external` node, by `link_of`), and tells which `ctx.emit_to` sends may wait for
room (those that follow the graph's direction)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelined.engine.counters import StageCounters
from pipelined.engine.queues import StageQueue
from pipelined.engine.router import ContainerTarget, DropHandler, QueueTarget, Router, Target, Terminal
from pipelined.graph.model import EXTERNAL, Graph


def _no_runner(stage: str) -> None:
    return None


def leaf_stages(target: Target) -> set[str]:
    """The stages whose queues `target` puts into."""
    if isinstance(target, QueueTarget):
        return {target.queue.stage}
    if isinstance(target, ContainerTarget):
        return leaf_stages(target.inner)
    if isinstance(target, Router):
        return set().union(*(leaf_stages(t) for t in target.targets))
    return set()


class RouterBuilder:
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
        self._reach: dict[str, set[str]] | None = None

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

    def entrance(self, node_id: str, inline: bool = True, *, never_block: bool = False) -> Target:
        """Items sent *to* `node_id`: its queue, or a nested pipeline's entrance.

        `inline=False` for `ctx.emit_to` targets and injected items: they always go through the
        queue and never take a stage's lock. `never_block` for emit_to sends that may close a
        cycle (see `follows_graph`)."""
        graph = self.graph
        node = graph.node(node_id)
        if node.kind == EXTERNAL:
            if self.link_of is None:
                raise ValueError(f"no way to reach {node_id!r}: this runtime has no links")
            return self.link_of(node_id)
        if node.kind != "pipeline":
            runner = self.runner_of if inline else _no_runner
            return QueueTarget(self.queue_of(node_id), self.on_drop, runner, never_block=never_block)
        entry = list(graph.entrance(node_id))
        targets = [self.entrance(e.dst, inline, never_block=never_block) for e in entry]
        counters = self.counters_of(node_id)
        if not targets:
            inner: Target = self.outputs(node_id)
        elif len(targets) == 1:
            inner = targets[0]
        else:
            weights = [int((node.stage.weights or {}).get(e.dst, 1)) for e in entry]
            inner = Router(node.stage.effective_fanout, targets, weights)
        return ContainerTarget(counters, "items_in", inner)

    def follows_graph(self, sender: str, target: Target) -> bool:
        """True when every queue `target` reaches is downstream of `sender` in the graph.

        Senders wait for room only along the graph's edges, which have no cycle; an emit_to
        that does not follow them (upstream, to itself, to a sibling) must not wait, or two
        stages each waiting for room in the other's queue would wait for ever."""
        if self._reach is None:
            self._reach = self._reachability()
        stages = leaf_stages(target)
        return bool(stages) and stages <= self._reach.get(sender, set())

    def _reachability(self) -> dict[str, set[str]]:
        nexts = {
            node.id: leaf_stages(self.outputs(node.id))
            for node in self.graph.nodes
            if node.kind not in ("pipeline", EXTERNAL)
        }
        reach: dict[str, set[str]] = {}
        for start in nexts:
            seen: set[str] = set()
            todo = list(nexts[start])
            while todo:
                stage = todo.pop()
                if stage not in seen:
                    seen.add(stage)
                    todo.extend(nexts.get(stage, ()))
            reach[start] = seen
        return reach

    def _towards(self, src: str, dst: str) -> Target:
        if self.graph.node(dst).kind == "pipeline" and self.graph.is_ancestor(dst, src):
            return ContainerTarget(self.counters_of(dst), "items_out", self.outputs(dst))
        return self.entrance(dst)
