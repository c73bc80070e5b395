"""PipelineRuntime: one version of one pipeline, from start() to drained.

Builds a queue per queue-fed stage, the output targets from the Graph, the stage workers
(threads, an event loop for async callables, or worker processes: assembly.py), then runs:
triggers start runs (triggers.py), runs end when nothing of them is in flight, a drain stops the producers and waits for
every run to end (accumulators flush as their runs become quiescent). At the drain deadline
everything left is dead-lettered with error "shutdown" (drain.py). Links to other pipelines go
through the `LinkSink` the supervisor hands in (links.py); items other pipelines send here
arrive through `accept_linked` as linked runs (linked.py, inject.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from pipelined import tracing
from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.engine.accumulator import AccumulatorStage
from pipelined.engine.assembly import before_fork, build, start_order
from pipelined.engine.book import PipelineBook
from pipelined.engine.drain import Drainer
from pipelined.engine.durable import open_gate
from pipelined.engine.entry import EntryGate
from pipelined.engine.failurelog import FailureLog, short
from pipelined.engine.hooks import HookSet, ItemGivenUp, error_text
from pipelined.engine.inject import deliver_linked
from pipelined.engine.lineage import Lineage
from pipelined.engine.linked import LinkedRuns, Subscribe
from pipelined.engine.links import LinkSink, LinkTargets, NoLinks
from pipelined.engine.producer import ProducerStage
from pipelined.engine.queues import Chunk, StageQueue
from pipelined.engine.retry import RetryTimer
from pipelined.engine.router import Target
from pipelined.engine.routerbuild import RouterBuilder
from pipelined.engine.runs import Run
from pipelined.engine.stats import StageMeter
from pipelined.engine.triggers import trigger
from pipelined.engine.views import pipeline_stats, stage_rows
from pipelined.errors import BadRequest, Conflict, StartError, Unavailable
from pipelined.graph.model import Graph

log = logging.getLogger("pipelined.engine")


class PipelineRuntime:
    def __init__(
        self,
        spec: PipelineSpec,
        graph: Graph,
        allocation: Any,
        book: PipelineBook,
        drain_timeout: float = 30.0,
        links: LinkSink | None = None,
    ) -> None:
        self.spec = spec
        self.link_targets = LinkTargets(links or NoLinks(), spec.name)  # sending over links
        self.linked = LinkedRuns(self)  # receiving
        # a stage that may send over a link routes item by item, so a refusal fails one attempt
        self._may_link = bool(graph.links or spec.emitted_links)
        self.graph = graph
        self.allocation = allocation
        self.book = book
        self.drain_timeout = drain_timeout
        self.state = "starting"
        self.started_at = time.monotonic()
        self.hooks: HookSet | None = None
        self.retry = RetryTimer(spec.name, self._retry_abandoned)
        self.gate = EntryGate(spec.name, None, False)  # the disk buffer, item ids: set up by start()
        self.replay: Any = None  # durable.Replay while stored items are being replayed
        self.failure_log = FailureLog(spec.name)
        self.queues: dict[str, StageQueue] = {}
        self.stages: dict[str, Any] = {}  # name -> ThreadStage / AsyncStage / ProcessStageRunner / ...
        self.producers: dict[str, ProducerStage] = {}
        self.accumulators: list[AccumulatorStage] = []  # topological order
        self.meters: dict[str, StageMeter] = {}
        self._targets: dict[str, Target] = {}  # ctx.emit_to and injections: never inline
        self._targets_unbounded: dict[str, Target] = {}  # emit_to that may close a cycle
        self._follows: dict[tuple[str, str], bool] = {}
        self._builder: RouterBuilder | None = None
        self._async_names: set[str] = set()
        self._runs: set[Run] = set()
        self._runs_cond = threading.Condition()
        self._state_lock = threading.Lock()
        self._stopping = False
        self._drainer: Drainer | None = None
        self._extra = {"pipeline": spec.name}

    # -- allocation -------------------------------------------------------------------------
    def threads_of(self, stage: StageSpec) -> int:
        alloc = getattr(self.allocation, "stages", {}).get(stage.name) if self.allocation else None
        if stage.kind in ("accumulator", "pipeline") or stage.uses_processes or stage.uses_ray:
            return 0
        if stage.name in self._async_names:  # its concurrency, never cut (config.md, Limits)
            return max(1, stage.threads or 1)
        if alloc is not None:
            return max(1, int(alloc.threads))
        return max(1, stage.threads or 1)

    def processes_of(self, stage: StageSpec) -> int:
        if not stage.uses_processes:
            return 0
        alloc = getattr(self.allocation, "stages", {}).get(stage.name) if self.allocation else None
        return max(1, int(alloc.processes)) if alloc is not None else max(1, stage.processes or 1)

    def stopping(self) -> bool:
        return self._stopping

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every stage (StartError naming the stage if one cannot) and auto_start producers."""
        try:
            build(self)
            self.replay = open_gate(self)  # the disk buffer (BufferCorrupt: StartError) and its replay
            self.retry.start()
            before_fork(self)
            for producer in self.producers.values():
                if producer.spec.auto_start:  # its TOML args must bind, or the version cannot start
                    producer.binder.bind_producer_args(None)
            for stage in start_order(self):
                stage.start()
        except BaseException as exc:
            self.state = "failed"
            self._teardown()
            if isinstance(exc, StartError):
                raise
            if isinstance(exc, BadRequest):
                raise StartError(exc.detail) from exc
            raise StartError(f"pipeline {self.spec.name!r}: {error_text(exc)}") from exc
        self.started_at = time.monotonic()
        with self._state_lock:
            self.state = "running"
        log.info("pipeline version %s running", self.spec.version, extra=self._extra)
        if self.replay is not None:
            self.replay.start()
        for name, producer in self.producers.items():
            if producer.spec.auto_start:
                self.trigger(name)

    # -- triggers ---------------------------------------------------------------------------
    def trigger(
        self,
        stage: str,
        args: Mapping[str, Any] | None = None,
        items: list[Any] | None = None,
        priority: int | None = None,
    ) -> str:
        """Start a run at `stage`; its id. BadRequest / Conflict / NotFound / QueueFull / Unavailable.

        The run is registered in the same step that finds the pipeline running (under the state
        lock `begin_drain` takes), so a drain that begins meanwhile waits for it: it is never
        left `running`, and its items never go into a queue nobody takes from any more.
        `priority` (−10..10, checked by the API): None takes a producer's `priority` key, else 0.
        triggers.py has the how."""
        return trigger(self, stage, args, items, priority)

    def _check_running(self) -> None:
        state = self.state
        if state != "running":
            where = f"pipeline {self.spec.name!r}"
            if state == "starting":
                raise Unavailable(f"{where} is starting")
            raise Conflict(f"{where} is {state}: it takes no triggers")

    def accept_linked(
        self,
        stage: str,
        parent: str,
        items: list[Any],
        priority: int | None = None,
        on_parent_end: Subscribe | None = None,
    ) -> str:
        """Items another pipeline's run `parent` sends to `stage` over a link; the id of the
        linked run they joined or started (linked.py). Errors as for a trigger."""
        return self.linked.accept(stage, parent, items, priority, on_parent_end)

    def deliver_linked(self, run: Run, stage: str, items: list[Any], first: int) -> None:
        """One delivery into a linked run (inject.py): stored, numbered, queued, all or none."""
        deliver_linked(self, run, stage, items, first, self._targets[stage])
        if first == 1:  # for the disk buffer, what it stored is all: a restart replays it, done
            self.gate.source_done(run, None, False)

    def new_running_run(self, stage: str, parent: str, priority: int) -> Run:
        """A new linked run, registered in the same step that finds the pipeline running (see
        trigger); the disk buffer, if any, learns of it."""
        with self._state_lock:
            self._check_running()
            run = self._new_run(stage, priority, parent)
        self.gate.begin_run(run, "link")
        return run

    def forget_run(self, run: Run) -> None:
        """A linked run whose first items were refused: it never started."""
        self.gate.end_run(run)
        self._forget_run(run)

    def _new_run(self, stage: str, priority: int = 0, parent: str | None = None) -> Run:
        run = self.book.runs.new_run(stage, self, priority, parent)
        if tracing.TRACER is not None:
            run.trace = tracing.start_run(self.spec.name, stage, run.id)
        with self._runs_cond:
            self._runs.add(run)
        return run

    def _forget_run(self, run: Run) -> None:
        if run.trace is not None:  # the trigger was refused: its span says so
            run.trace.set_attribute(tracing.ATTR_STATE, "refused")
            run.trace.end()
            run.trace = None
        with self._runs_cond:
            self._runs.discard(run)
            self._runs_cond.notify_all()
        self.book.runs.discard(run.id)

    # -- RunListener ------------------------------------------------------------------------
    def run_quiescent(self, run: Run) -> None:
        for acc in self.accumulators:
            if acc.holds(run):
                acc.request_flush(run)
                return

    def run_ended(self, run: Run) -> None:
        self.gate.end_run(run)
        self.book.runs.record_end(run)
        if run.trace is not None:
            tracing.end_run(run.trace, run.to_dict())
        extra = {**self._extra, "stage": run.stage, "run": run.id}
        log.info("run %s %s%s", run.id, run.state, f": {run.error}" if run.error else "", extra=extra)
        if self.hooks is not None and self.hooks.has_run_hooks:
            self.hooks.after_run(run.to_dict())
        with self._runs_cond:
            self._runs.discard(run)
            self._runs_cond.notify_all()

    def active_runs(self) -> list[Run]:
        with self._runs_cond:
            return list(self._runs)

    def wait_runs_ended(self, deadline: float) -> bool:
        with self._runs_cond:
            return self._runs_cond.wait_for(lambda: not self._runs, max(0.0, deadline - time.monotonic()))

    # -- services for stages ----------------------------------------------------------------
    def has_rejecting_queue(self) -> bool:
        return self._may_link or any(q.on_full == "reject" for q in self.queues.values())

    def target_for(self, stage: str, sender: str | None = None) -> Target:
        """Where `ctx.emit_to(stage, ...)` puts; ValueError for a stage that takes no items.

        A `sender` stage waits for room only if `stage` is downstream of it in the graph;
        otherwise (upstream, itself, a sibling: a possible cycle) its items go in past a full
        queue's bound, so two stages can never wait for room in each other's queues. Producers
        (no sender) have no queue anyone waits for: they always wait."""
        target = self._targets.get(stage)
        if target is None:
            link, stage = self.link_targets.resolve(stage)  # "<pipeline>/<stage>": a link
            if link is not None:
                return link
            target = self._targets.get(stage)
        if target is None:
            raise ValueError(f"ctx.emit_to: pipeline {self.spec.name!r} has no stage {stage!r} that takes items")
        if sender is None:
            return target
        follows = self._follows.get((sender, stage))
        if follows is None:
            assert self._builder is not None
            follows = self._follows[(sender, stage)] = self._builder.follows_graph(sender, target)
        return target if follows else self._targets_unbounded[stage]

    def dead_letter(
        self,
        stage: str,
        run: Run,
        items: list[Any],
        attempts: int,
        error: BaseException,
        *,
        text: str | None = None,
        trace: str | None = None,
        held: int = 0,
        entered: bool = True,
        lineage: Lineage | None = None,
    ) -> None:
        """Record dead letters (with the traceback, when there is one), count them, call
        on_error, settle the run."""
        if not items:
            return
        n = len(items)
        text = text or error_text(error)
        run.last_dead_letter_error = f"stage {stage!r}: {short(text)}"
        self.book.dead_letters.add_many(run.id, stage, attempts, text, items, trace)
        self.book.counters(stage).add("items_dead_lettered", n)
        if self.hooks is not None and self.hooks.has_on_error:
            for item in items:
                self.hooks.on_error(stage, run.id, item, error)
        run.settle(leave=n if entered else 0, dead=n, hold=-held, lineage=lineage)

    def _dropped(self, stage: str, dropped: list[Chunk], reason: str = "dropped") -> None:
        for chunk in dropped:
            if reason == "shutdown":
                self.leftover(stage, chunk.run, chunk.items, chunk.attempts, chunk.lineage)
                continue
            self.book.counters(stage).add("items_dropped", len(chunk.items))
            self.dead_letter(stage, chunk.run, chunk.items, 0, ItemGivenUp(reason), text=reason, lineage=chunk.lineage)

    def leftover(
        self, stage: str, run: Run, items: list[Any], attempts: int, lineage: Lineage | None, held: int = 0
    ) -> None:
        """What the drain deadline finds: dead-lettered "shutdown" — or, with a disk buffer, left
        stored for the next version or start (its run stays running until then)."""
        if self.gate.buffer is None:
            shutdown = ItemGivenUp("shutdown")
            self.dead_letter(stage, run, items, attempts, shutdown, text="shutdown", held=held, lineage=lineage)

    def _retry_abandoned(self, chunk: Chunk, queue: StageQueue) -> None:
        self.leftover(queue.stage, chunk.run, chunk.items, chunk.attempts, chunk.lineage)

    def record_latency(self, stage: str, enqueued_at: float, n: int) -> None:
        self.meters[stage].record_latency(time.perf_counter() - enqueued_at, n)

    # -- drain ------------------------------------------------------------------------------
    def begin_drain(self, timeout: float | None = None) -> None:
        """Stop producers and refuse triggers; finish what is in flight (in the background)."""
        with self._state_lock:
            if self.state in ("drained", "failed") or self._drainer is not None:
                return
            self.state = "draining"
            self._stopping = True
            deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
            self._drainer = Drainer(self, deadline)
        self.linked.close_all()  # linked runs take no more items: they end when done
        self._drainer.start()

    def wait_drained(self, timeout: float | None) -> bool:
        drainer = self._drainer
        if drainer is None:
            return self.state == "drained"
        return drainer.wait(timeout)

    def drain(self, timeout: float | None = None) -> None:
        """Drain until done; at the deadline (drain_timeout or `timeout`) leftovers are dead-lettered."""
        self.begin_drain(timeout)
        limit = self.drain_timeout if timeout is None else timeout
        self.wait_drained(limit + 10.0)

    def finish_drain(self) -> None:
        """Called by the Drainer when everything is done."""
        with self._state_lock:
            self.state = "drained"
        self.failure_log.flush()
        log.info("pipeline version %s drained", self.spec.version, extra=self._extra)

    def _teardown(self) -> None:
        self._stopping = True
        for producer in self.producers.values():
            for run in producer.stop():
                run.source_finished(cancelled=True)
            if producer.pool is not None:
                try:
                    producer.pool.stop(5.0)
                except Exception:
                    log.exception("stopping worker processes failed", extra={**self._extra, "stage": producer.name})
        for queue in self.queues.values():
            queue.close()
        for stage in self.stages.values():
            stop = getattr(stage, "stop", None)
            if stop is not None:
                stop()
        self.retry.stop()
        self.failure_log.flush()

    # -- views ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return pipeline_stats(self)

    def buffer_stats(self) -> dict[str, Any]:
        return self.book.buffer_stats(self.spec.buffer)

    def stage_rows(self) -> list[dict[str, Any]]:
        return stage_rows(self)

    def live_workers(self) -> tuple[int, int]:
        threads = processes = 0
        for stage in [*self.producers.values(), *self.stages.values()]:
            if getattr(stage, "uses_processes", False):
                processes += stage.live_workers()
            elif not getattr(stage, "uses_ray", False):  # actors are the cluster's, not ours
                threads += stage.live_workers()
        return threads, processes
