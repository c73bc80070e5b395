"""One pipeline name in the daemon: its current version, book, runtime, state and swap gate.

The slot outlives versions: the `PipelineBook` (counters, runs, dead letters) is created once per
name and handed to every `PipelineRuntime` built for it. Lifecycle changes (start, drain, swap)
hold the slot's lock; triggers never do — during a swap they wait at the gate for the new version
(at most `SWAP_WAIT` seconds, then 503).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelined.config.callables import is_async_callable
from pipelined.config.spec import PipelineSpec, Problem, StageSpec
from pipelined.engine.book import PipelineBook
from pipelined.engine.links import LinkSink
from pipelined.engine.runtime import PipelineRuntime
from pipelined.engine.views import stopped_stage_stats
from pipelined.errors import Conflict, StartError, Unavailable
from pipelined.graph import limits
from pipelined.graph.model import Graph

log = logging.getLogger("pipelined.supervisor")

SWAP_WAIT = 10.0


def utc_now_iso() -> str:
    """ISO 8601 UTC with microseconds, as every time the API shows (runs, dead letters):
    `2026-11-23T10:00:00.000000+00:00` (isoformat() alone drops zero microseconds)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class PipelineVersion:
    """A parsed, validated, routed pipeline file, ready to start."""

    spec: PipelineSpec
    graph: Graph
    warnings: tuple[Problem, ...] = ()


class PipelineSlot:
    def __init__(
        self,
        name: str,
        path: Path,
        book: PipelineBook,
        budget: limits.DaemonBudget,
        default_drain_timeout: float,
        links: LinkSink | None = None,
    ) -> None:
        self.name = name
        self.links = links  # how its runtimes reach other pipelines (the supervisor's LinkRouter)
        self.path = path
        self.book = book
        self.budget = budget
        self.default_drain_timeout = default_drain_timeout
        self.version: PipelineVersion | None = None  # what `runtime` runs (or failed to start)
        self.runtime: Any = None
        self.allocation: Any = None
        self.seen_key: tuple[str, str] | None = None  # content key of the file last applied
        self.running_key: tuple[str, str] | None = None  # content key of what `runtime` runs
        self.warned_cuts: set[tuple[str, str, str, int]] = set()  # limits warnings already logged
        self._reserved: tuple[PipelineVersion, limits.Allocation] | None = None  # reserve()
        self.file_version = ""  # sha12 of the file last seen
        self.error: str | None = None
        self.pending_error = False  # the file on disk is not what runs: its error is current
        self.disabled = False
        self.loaded_at: str | None = None
        self.last_reload: dict[str, Any] | None = None
        self.reloads = {"ok": 0, "failed": 0}
        self.lock = threading.RLock()
        self._gate = threading.Condition()
        self._swapping = False

    # -- views ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.disabled:
            return "disabled"
        if self._swapping and (self.runtime is None or self.runtime.state == "drained"):
            return "starting"
        if self.runtime is None:
            return "starting" if self.error is None and self.last_reload is None else "failed"
        return str(self.runtime.state)

    @property
    def drain_timeout(self) -> float:
        spec = self.version.spec if self.version else None
        return spec.drain_timeout if spec and spec.drain_timeout is not None else self.default_drain_timeout

    @property
    def shown_version(self) -> str:
        """The running version's sha12, else the file's."""
        if self.version is not None and self.runtime is not None:
            return self.version.spec.version
        return self.file_version

    def summary(self) -> dict[str, Any]:
        spec = self.version.spec if self.version else None
        return {
            "name": self.name,
            "state": self.state,
            "file": str(self.path),
            "version": self.shown_version,
            "stages": sum(1 for _ in spec.walk()) if spec else 0,
            "error": self.error,
        }

    def detail(self) -> dict[str, Any]:
        spec = self.version.spec if self.version else None
        limits = {
            "max_threads": spec.max_threads if spec else None,
            "max_processes": spec.max_processes if spec else None,
            "max_retries": spec.max_retries if spec else None,
        }
        return {
            **self.summary(),
            "description": spec.description if spec else "",
            "limits": limits,
            "loaded_at": self.loaded_at,
            "last_reload": self.last_reload,
            "stages": self._stage_rows(),
        }

    def _stage_rows(self) -> list[dict[str, Any]]:
        if self.runtime is not None:
            return list(self.runtime.stage_rows())
        if self.version is None:
            return []
        # not running (disabled, failed to start, waiting to start): the counts it gets when it
        # starts, within its own limits — the same numbers GET /pipelines/{name}/graph shows
        graph = self.version.graph
        allocation = self.planned_allocation()
        rows = []
        for node in graph.stage_nodes():
            got = allocation.stages.get(node.id) if allocation is not None else None
            builtin = node.kind in ("accumulator", "pipeline")
            rows.append(
                {
                    "name": node.id,
                    "kind": node.kind,
                    "auto_start": bool(node.stage.auto_start) if node.kind == "producer" else False,
                    "threads": 0 if builtin or got is None else int(got.threads),
                    "processes": 0 if builtin or got is None else int(got.processes),
                    "requested_threads": 0 if builtin else node.stage.requested_threads,
                    "requested_processes": 0 if builtin else node.stage.requested_processes,
                    "upstream": list(graph.upstream(node.id)),
                    "downstream": list(graph.downstream(node.id)),
                }
            )
        return rows

    def planned_allocation(self) -> Any:
        """The running version's allocation, else what the current version gets within its own limits."""
        if self.runtime is not None and self.allocation is not None:
            return self.allocation
        if self.version is None:
            return None
        spec = self.version.spec

        def is_async(stage: StageSpec) -> bool:
            try:
                return is_async_callable(stage.call, spec.python_path)
            except Exception:  # noqa: BLE001 - a view: an unimportable call counts as not async
                return False

        return limits.allocate(spec, self.version.graph, spec.max_threads, spec.max_processes, is_async)

    def stats(self) -> dict[str, Any]:
        if self.runtime is not None:
            stats = dict(self.runtime.stats())
            stats["state"] = self.state
            return stats
        return {
            "pipeline": self.name,
            "state": self.state,
            "version": self.shown_version,
            "uptime_s": 0.0,
            "runs": self.book.runs.counts(),
            "bottleneck": None,
            "stages": self._stopped_stage_stats(),
            "buffer": self.book.buffer_stats(self.version.spec.buffer if self.version is not None else "memory"),
        }

    def _stopped_stage_stats(self) -> dict[str, Any]:
        if self.version is None:
            return {}
        return stopped_stage_stats(self.version.spec, self.book)

    def live_workers(self) -> tuple[int, int]:
        if self.runtime is None:
            return 0, 0
        threads, processes = self.runtime.live_workers()
        return int(threads), int(processes)

    # -- bookkeeping ---------------------------------------------------------------------
    def record_reload(self, ok: bool, error: str | None) -> None:
        self.last_reload = {"at": utc_now_iso(), "ok": ok, "error": error}
        self.reloads["ok" if ok else "failed"] += 1
        self.error = error
        self.pending_error = not ok

    # -- lifecycle (hold `lock`) ---------------------------------------------------------
    def reserve(self, version: PipelineVersion) -> None:
        """Take `version`'s share of the daemon's budget now (new pipelines reserve in name order,
        then start in parallel); `start_version(version)` uses it."""
        self._reserved = (version, self._allocate(version))

    def release_reservation(self) -> None:
        """Give back a reservation that no start used (the version never started)."""
        if self._reserved is not None:
            self._reserved = None
            if self.runtime is None:
                self.budget.give_back(self.name)

    def start_version(self, version: PipelineVersion) -> None:
        """Build and start a runtime for `version` (StartError when it cannot start)."""
        spec = version.spec
        reserved, self._reserved = self._reserved, None
        allocation = reserved[1] if reserved is not None and reserved[0] is version else self._allocate(version)
        drain_timeout = spec.drain_timeout if spec.drain_timeout is not None else self.default_drain_timeout
        runtime = PipelineRuntime(
            spec, version.graph, allocation, self.book, drain_timeout=drain_timeout, links=self.links
        )
        try:
            runtime.start()
        except Exception:
            self.budget.give_back(self.name)
            self._stop_quietly(runtime)
            raise
        self.runtime = runtime
        self.allocation = allocation
        self.version = version
        self.disabled = False
        self.loaded_at = utc_now_iso()

    def _allocate(self, version: PipelineVersion) -> limits.Allocation:
        """Take from the daemon's budget and allocate threads/processes per stage (cuts logged once)."""
        spec = version.spec

        known: dict[str | None, bool] = {}

        def is_async(stage: StageSpec) -> bool:  # asked several times per stage by the allocation
            if stage.call not in known:
                known[stage.call] = is_async_callable(stage.call, spec.python_path)
            return known[stage.call]

        wanted_threads, wanted_processes = limits.pipeline_demand(spec, version.graph, is_async)
        threads, processes = self.budget.take(self.name, wanted_threads, wanted_processes)
        allocation = limits.allocate(spec, version.graph, threads, processes, is_async)
        self.budget.hold(self.name, *allocation.totals())
        for cut in allocation.cuts:
            key = (spec.version, cut.stage, cut.resource, cut.got)
            if key in self.warned_cuts:
                continue  # once per stage and version: a restart of the same file does not repeat it
            self.warned_cuts.add(key)
            log.warning("%s: %s", self.name, cut.message(), extra={"pipeline": self.name, "stage": cut.stage})
        return allocation

    def drain_runtime(self, timeout: float | None = None) -> None:
        """Drain the current runtime (leftovers dead-lettered "shutdown") and give back its budget.

        A reservation (`reserve`) is not the runtime's budget: a fresh pipeline's first start
        drains "nothing" first and must still start with what it reserved, held."""
        runtime = self.runtime
        if runtime is not None and runtime.state in ("starting", "running", "draining"):
            runtime.drain(self.drain_timeout if timeout is None else timeout)
        if runtime is not None or self._reserved is None:
            self.budget.give_back(self.name)

    def swap_to(self, new: PipelineVersion) -> str | None:
        """Drain the old version, start `new`; if it fails, start the old one again.

        Returns None on success, else the start error (the old version, if any, runs again).
        """
        old = self.version if self.runtime is not None and self.state in ("running", "starting") else None
        self._begin_swap()
        try:
            self.drain_runtime()
            try:
                self.start_version(new)
                return None
            except Exception as exc:  # noqa: BLE001 - any start failure restores the old
                error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, StartError) else str(exc)
                self._restore(old, new, error)
                return error
        finally:
            self._end_swap()

    def _restore(self, old: PipelineVersion | None, new: PipelineVersion, error: str) -> None:
        if old is None:
            self.runtime = None
            self.version = new  # POST /start retries it
            return
        log.warning("%s: new version failed to start (%s); restarting the previous version", self.name, error,
                    extra={"pipeline": self.name})  # fmt: skip
        try:
            self.start_version(old)
        except Exception as exc:  # noqa: BLE001 - report both failures
            log.error("%s: previous version failed to start again: %s", self.name, exc,
                      extra={"pipeline": self.name})  # fmt: skip
            self.runtime = None

    def disable(self, version: PipelineVersion) -> None:
        self.drain_runtime()
        self.version = version
        self.runtime = None
        self.disabled = True

    @staticmethod
    def _stop_quietly(runtime: Any) -> None:
        try:
            if runtime.state in ("starting", "running", "draining"):
                runtime.drain(0)
        except Exception as exc:  # noqa: BLE001 - cleanup of a runtime that failed to start
            log.debug("cleanup after failed start: %s", exc)

    # -- the swap gate -------------------------------------------------------------------
    def begin_swap(self) -> None:
        """Hold triggers and link deliveries at the gate (a new pipeline until its first start)."""
        self._begin_swap()

    def end_swap(self) -> None:
        self._end_swap()

    def _begin_swap(self) -> None:
        with self._gate:
            self._swapping = True

    def _end_swap(self) -> None:
        with self._gate:
            self._swapping = False
            self._gate.notify_all()

    @property
    def swapping(self) -> bool:
        return self._swapping

    def current_runtime(self, wait: float = SWAP_WAIT) -> Any:
        """The runtime to hand a request to, waiting (≤ `wait` s) while a swap is in progress."""
        deadline = time.monotonic() + wait
        with self._gate:
            while self._swapping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(f"pipeline {self.name!r} is being reloaded; try again")
                self._gate.wait(remaining)
            runtime = self.runtime
        if runtime is None or self.disabled:
            raise Conflict(f"pipeline {self.name!r} is {self.state}" + (f": {self.error}" if self.error else ""))
        return runtime

    def trigger(
        self, stage: str, args: dict[str, Any] | None, items: list[Any] | None, priority: int | None = None
    ) -> str:
        deadline = time.monotonic() + SWAP_WAIT
        while True:
            runtime = self.current_runtime(max(0.0, deadline - time.monotonic()))
            try:
                return str(runtime.trigger(stage, args=args, items=items, priority=priority))
            except Conflict:
                # the version began draining for a swap between the gate and the trigger: wait for the new one
                if (self._swapping or self.runtime is not runtime) and time.monotonic() < deadline:
                    continue
                raise
