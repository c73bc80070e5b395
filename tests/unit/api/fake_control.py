"""An in-memory `Control` for API unit tests: real shapes (api.md), real errors, no engine.

Conventions the tests rely on:
- pipeline "orders": producer `read` (args), processor `enrich`, consumer `store` (queue capacity 3);
- trigger args {"bad": ...} → BadRequest naming the parameter; args {"slow": true} → the run
  stays `running` until `finish_run(run_id)`;
- items longer than the stage's capacity → QueueFull; items == ["block"] → Unavailable;
- put_config text containing "invalid" → ConfigInvalid with two problems.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pipelined.config.spec import Problem
from pipelined.errors import BadRequest, ConfigInvalid, Conflict, NotFound, QueueFull, Unavailable

NOW = "2026-11-23T10:00:00.000000+00:00"
STAGES = (("read", "producer"), ("enrich", "processor"), ("store", "consumer"))
QUEUE_CAPACITY = 3
TOKEN = "s3cret-token"


@dataclass
class FakePipeline:
    name: str
    state: str = "running"
    toml: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    slow_drain: bool = False
    drained: threading.Event = field(default_factory=threading.Event)


class FakeControl:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = False
        self.slow_runs = True  # args {"slow": true} keep a run going (off for fuzzing)
        self.ready = True
        self.pipelines: dict[str, FakePipeline] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.run_done: dict[str, threading.Event] = {}
        self.reloads: dict[str, dict[str, int]] = {"orders": {"ok": 2, "failed": 1}}
        self.add("orders")
        self.add("broken", state="failed")

    # -- helpers for tests -------------------------------------------------------------------
    def add(self, name: str, state: str = "running") -> FakePipeline:
        self.pipelines[name] = FakePipeline(name, state, toml=f'description = "{name}"\n')
        return self.pipelines[name]

    def finish_run(self, run_id: str) -> None:
        for pipeline in self.pipelines.values():
            for run in pipeline.runs:
                if run["run"] == run_id:
                    run.update(state="completed", finished_at=NOW)
        self.run_done[run_id].set()

    def _get(self, name: str) -> FakePipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise NotFound(f"no pipeline named {name!r}") from None

    def _summary(self, p: FakePipeline) -> dict[str, Any]:
        return {
            "name": p.name,
            "state": p.state,
            "file": f"/etc/pipelined/conf.d/{p.name}.toml",
            "version": "3fa1c0d2b9e4",
            "stages": len(STAGES),
            "error": "boom: setup failed" if p.state == "failed" else None,
        }

    # -- daemon ------------------------------------------------------------------------------
    def is_stopping(self) -> bool:
        return self.stopping

    def is_ready(self) -> bool:
        return self.ready and not self.stopping

    def daemon_stats(self) -> dict[str, Any]:
        running = {n: self.stats(n) for n, p in self.pipelines.items() if p.state != "failed"}
        daemon = {
            "version": "0.1.0",
            "uptime_s": 12.5,
            "pid": 4242,
            "pipelines": len(self.pipelines),
            "threads": 3,
            "processes": 0,
            "rss_bytes": 50_000_000,
        }
        return {"daemon": daemon, "pipelines": running}

    def reload(self) -> dict[str, Any]:
        self.calls.append(("reload", ()))
        return {
            "added": [],
            "updated": ["orders"],
            "removed": [],
            "unchanged": [],
            "failed": {"broken": "broken.toml: broken/read/call: cannot import 'nope'"},
        }

    def reload_counts(self) -> dict[str, dict[str, int]]:
        return self.reloads

    # -- pipelines ---------------------------------------------------------------------------
    def list_pipelines(self) -> list[dict[str, Any]]:
        return [self._summary(p) for _, p in sorted(self.pipelines.items())]

    def pipeline(self, name: str) -> dict[str, Any]:
        p = self._get(name)
        stages = [
            {
                "name": s,
                "kind": kind,
                "auto_start": kind == "producer",
                "threads": 1,
                "processes": 0,
                "requested_threads": None,
                "requested_processes": None,
                "upstream": [STAGES[i - 1][0]] if i else [],
                "downstream": [STAGES[i + 1][0]] if i + 1 < len(STAGES) else [],
            }
            for i, (s, kind) in enumerate(STAGES)
        ]
        return {
            **self._summary(p),
            "description": p.name,
            "loaded_at": NOW,
            "last_reload": None,
            "limits": {"max_threads": None, "max_processes": None, "max_retries": 3},
            "stages": stages,
        }

    def trigger(
        self, name: str, stage: str, args: dict[str, Any] | None, items: list[Any] | None, priority: int | None = None
    ) -> Any:
        with self.lock:
            p = self._get(name)
            self.calls.append(("trigger", (name, stage, args, items) if priority is None else (name, stage, args, items, priority)))
            if stage not in dict(STAGES):
                raise NotFound(f"pipeline {name!r} has no stage {stage!r}")
            if p.state != "running":
                raise Conflict(f"pipeline {name!r} is {p.state}: it takes no triggers")
            if args and "bad" in args:
                raise BadRequest(f"pipeline {name!r} stage {stage!r}: unexpected argument 'bad'")
            if items == ["block"]:
                raise Unavailable(f"pipeline {name!r} stage {stage!r}: queue still full after 5 s")
            if items is not None and len(items) > QUEUE_CAPACITY:
                raise QueueFull(f"pipeline {name!r} stage {stage!r}: queue has room for {QUEUE_CAPACITY}")
            run_id = f"r-{len(p.runs) + 1:06d}"
            slow = self.slow_runs and bool(args and args.get("slow"))
            run = {
                "run": run_id,
                "pipeline": name,
                "stage": stage,
                "priority": priority or 0,
                "state": "running" if slow else "completed",
                "started_at": NOW,
                "finished_at": None if slow else NOW,
                "items": {
                    "produced": len(items or []),
                    "in_flight": 0,
                    "finished": len(items or []),
                    "filtered": 0,
                    "dead_lettered": 0,
                },
                "error": None,
            }
            p.runs.insert(0, run)
            self.run_done[run_id] = threading.Event()
            if not slow:
                self.run_done[run_id].set()
            return {"run": run_id, "pipeline": name, "stage": stage}

    def wait_run(self, name: str, run_id: str, timeout: float) -> tuple[bool, Any]:
        self.calls.append(("wait_run", (name, run_id, timeout)))
        finished = self.run_done[run_id].wait(timeout)
        return finished, self.run(name, run_id)

    def run_waiter(self, name: str, run_id: str) -> Any:
        self.run(name, run_id)
        self.calls.append(("wait_run", (name, run_id)))
        return self.run_done[run_id].is_set

    def runs(self, name: str) -> list[Any]:
        return list(self._get(name).runs)

    def run(self, name: str, run_id: str) -> Any:
        for run in self._get(name).runs:
            if run["run"] == run_id:
                return dict(run)
        raise NotFound(f"pipeline {name!r} has no run {run_id!r}")

    def drain(self, name: str) -> Any:
        p = self._get(name)
        if p.state in ("drained", "failed", "disabled"):
            raise Conflict(f"pipeline {name!r} is {p.state}: nothing to drain")
        p.state = "draining"
        if not p.slow_drain:
            p.state = "drained"
            p.drained.set()
        return {"state": "draining"}

    def wait_drained(self, name: str, timeout: float | None) -> tuple[bool, Any]:
        self.calls.append(("wait_drained", (name, timeout)))
        p = self._get(name)
        return p.drained.wait(0.05 if timeout is None else timeout), self.stats(name)

    def drain_waiter(self, name: str, timeout: float | None) -> Any:
        self.calls.append(("wait_drained", (name, timeout)))
        return self._get(name).drained.is_set, 0.05 if timeout is None else timeout

    def start(self, name: str) -> Any:
        p = self._get(name)
        if p.state in ("running", "starting", "draining"):
            raise Conflict(f"pipeline {name!r} is already {p.state}")
        p.state = "running"
        p.drained.clear()
        return {"state": "running"}

    def stats(self, name: str) -> Any:
        p = self._get(name)
        stage = {
            "items_in": 10,
            "items_out": 9,
            "items_failed": 2,
            "items_retried": 1,
            "items_dropped": 0,
            "items_dead_lettered": 1,
            "queue_depth": 0,
            "queue_capacity": QUEUE_CAPACITY,
            "threads": 1,
            "processes": 0,
            "busy": 0,
            "utilization": 0.25,
            "throughput_per_s": 80.0,
            "throttled_s": 0.0,
        }
        stages = {s: {"kind": kind, **stage} for s, kind in STAGES}
        stages["enrich"]["latency_ms"] = {"p50": 0.4, "p90": 1.1, "p99": 3.0}
        runs = {"started": len(p.runs), "completed": len(p.runs), "failed": 0, "cancelled": 0, "active": 0}
        return {
            "pipeline": name,
            "state": p.state,
            "version": "3fa1c0d2b9e4",
            "uptime_s": 12.5,
            "runs": runs,
            "bottleneck": "enrich",
            "stages": stages,
        }

    def dead_letters(self, name: str, limit: int) -> list[Any]:
        self.calls.append(("dead_letters", (name, limit)))
        return self._get(name).dead_letters[:limit]

    def graph(self, name: str, fmt: str) -> Any:
        self._get(name)
        if fmt == "mermaid":
            return "flowchart LR\n  read --> enrich\n  enrich --> store\n"
        if fmt == "dot":
            return 'digraph "orders" {\n  read -> enrich;\n  enrich -> store;\n}\n'
        nodes = [
            {"id": s, "kind": k, "threads": 1, "processes": 0, "auto_start": k == "producer"}
            for s, k in STAGES
        ]
        edges = [
            {"from": "read", "to": "enrich", "route": "direct"},
            {"from": "enrich", "to": "store", "route": "direct"},
        ]
        return {"nodes": nodes, "edges": edges}

    def daemon_graph(self, fmt: str) -> Any:
        self.calls.append(("daemon_graph", (fmt,)))
        if fmt == "mermaid":
            return "flowchart LR\n  st_orders_2f_store -.-> st_archive_2f_keep\n"
        if fmt == "dot":
            return 'digraph pipelined {\n  "s:orders/store" -> "s:archive/keep" [style=dashed];\n}\n'
        names = sorted(self.pipelines)
        return {
            "pipelines": [{"name": n, "state": self.pipelines[n].state} for n in names],
            "links": [{"from": "orders/store", "to": "archive/keep"}],
        }

    # -- config writes -----------------------------------------------------------------------
    def put_config(self, name: str, toml_text: str) -> tuple[bool, Any]:
        self.calls.append(("put_config", (name, toml_text)))
        if "invalid" in toml_text:
            raise ConfigInvalid(
                [
                    Problem(f"{name}.toml", f"{name}/read/call", "cannot import 'nope'", line=3),
                    Problem(
                        f"{name}.toml", f"{name}/read/threds", 'unknown key (did you mean "threads"?)', line=4
                    ),
                ]
            )
        created = name not in self.pipelines
        self.add(name).toml = toml_text
        return created, self.pipeline(name)

    def delete_config(self, name: str) -> Any:
        self._get(name)
        del self.pipelines[name]
        return {"name": name, "removed": True}
