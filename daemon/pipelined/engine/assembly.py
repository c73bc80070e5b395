"""Assembly of one pipeline version from its graph: a queue and a meter per stage, the
entrance targets (ctx.emit_to, triggers), the output targets and the stage runners
(stagebuild.py picks each one's kind); the order they start in; the before_fork hooks.
"""

from __future__ import annotations

from typing import Any

from pipelined.engine.accumulator import AccumulatorStage
from pipelined.engine.hooks import HookSet
from pipelined.engine.producer import ProducerStage
from pipelined.engine.queues import StageQueue
from pipelined.engine.routerbuild import RouterBuilder
from pipelined.engine.stagebuild import build_stage
from pipelined.engine.stats import StageMeter
from pipelined.graph.model import EXTERNAL
from pipelined.workers import run_before_fork

PipelineRuntime = Any  # engine/runtime.py's, which imports this module


def build(rt: PipelineRuntime) -> None:
    """Queues, meters, targets and stage runners of every node of the graph (nothing starts)."""
    rt.hooks = HookSet(rt.spec, rt.failure_log)
    for node in rt.graph.stage_nodes():
        stage = node.stage
        counters = rt.book.counters(stage.name)
        workers = rt.threads_of(stage) or rt.processes_of(stage)
        rt.meters[stage.name] = StageMeter(counters, stage.kind, workers, rt.spec.track_latency)
        if stage.kind not in ("producer", "pipeline"):
            rt.queues[stage.name] = StageQueue(
                stage.name, stage.queue_size, stage.on_full, max_wait_s=rt.spec.priority_max_wait
            )
    builder = RouterBuilder(
        rt.graph, rt.queues.__getitem__, rt.book.counters, rt._dropped, rt.stages.get,
        rt.link_targets.target,
    )
    rt._builder = builder
    for node in rt.graph.stage_nodes():
        if node.kind != "producer":
            rt._targets[node.id] = builder.entrance(node.id, inline=False)
            rt._targets_unbounded[node.id] = builder.entrance(node.id, inline=False, never_block=True)
    for node in rt.graph.nodes:
        if node.kind in ("pipeline", EXTERNAL):
            continue
        stage = build_stage(rt, node.stage, builder.outputs(node.id), rt.hooks)
        if getattr(stage, "uses_ray", False):  # busy and utilization per actor
            rt.meters[node.id].workers = stage.replicas
        if hasattr(stage, "concurrency"):
            rt._async_names.add(node.id)
            rt.meters[node.id].workers = stage.concurrency
        if isinstance(stage, ProducerStage):
            rt.producers[node.id] = stage
        else:
            rt.stages[node.id] = stage
            if isinstance(stage, AccumulatorStage):
                rt.accumulators.append(stage)
    rt.accumulators.sort(key=lambda acc: rt.graph.topological_index()[acc.name])


def before_fork(rt: PipelineRuntime) -> None:
    """The before_fork hooks, once for all process stages (pipeline hook, then stages')."""
    runners = [*rt.producers.values(), *rt.stages.values()]
    stages = [s.spec for s in runners if getattr(s, "uses_processes", False)]
    if stages:
        run_before_fork(rt.spec, stages)


def start_order(rt: PipelineRuntime) -> list[Any]:
    """Consumers first, producers last, so nothing is produced before it can be taken."""
    topo = rt.graph.topological_index()
    stages = sorted(rt.stages.values(), key=lambda s: -topo[s.name])
    return [*stages, *rt.producers.values()]
