"""API documents in the shapes of api.md, and a `TopSource` that serves them from memory.

`stats_doc()` is a daemon with two pipelines: "orders" (read → enrich → store, enrich the
bottleneck with a half-full queue) and "audit" (one consumer). FakeSource records every call,
can be put `down` (every call raises Unreachable, as the real client does when the daemon is
gone), and answers trigger / drain with `answer` (a dict) or raises it (a ClientError).
"""

from __future__ import annotations

import copy
from typing import Any

from pipelined.cli.client import ClientError, Unreachable

ADDRESS = "http://127.0.0.1:8470"


def stage(kind: str = "processor", *, items_in: int = 0, items_out: int = 0, failed: int = 0, dead: int = 0,
          depth: int = 0, capacity: int = 1000, threads: int = 1, processes: int = 0, busy: int = 0,
          utilization: float = 0.0, throughput: float = 0.0, latency: dict[str, float] | None = None,
          ) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {
        "kind": kind, "items_in": items_in, "items_out": items_out, "items_failed": failed,
        "items_retried": 0, "items_dropped": 0, "items_dead_lettered": dead,
        "queue_depth": depth, "queue_capacity": 0 if kind == "producer" else capacity,
        "threads": threads, "processes": processes, "busy": busy, "utilization": utilization,
        "throughput_per_s": throughput,
    }  # fmt: skip
    if latency is not None:
        row["latency_ms"] = latency
    return row


def pipeline_doc(name: str, stages: dict[str, dict[str, Any]], *, state: str = "running",
                 bottleneck: str | None = None, active: int = 0, started: int = 0, version: str = "3fa1c0d2b9e4",
                 ) -> dict[str, Any]:  # fmt: skip
    return {"pipeline": name, "state": state, "version": version, "uptime_s": 12.5,
            "runs": {"started": started, "completed": started - active, "failed": 0, "cancelled": 0,
                     "active": active},
            "bottleneck": bottleneck, "stages": stages}  # fmt: skip


def stats_doc(**pipelines: dict[str, Any]) -> dict[str, Any]:
    if not pipelines:
        pipelines = {
            "orders": pipeline_doc("orders", {
                "read": stage("producer", items_out=1000, throughput=80.0),
                "enrich": stage(items_in=1000, items_out=998, failed=9, dead=2, depth=500, threads=4, busy=3,
                                utilization=0.9, throughput=80.0),
                "store": stage("consumer", items_in=996, throughput=79.0),
            }, bottleneck="enrich", active=1, started=3),
            "audit": pipeline_doc("audit", {"log": stage("consumer", items_in=5, throughput=0.5)}),
        }  # fmt: skip
    return {"daemon": {"version": "0.1.0", "uptime_s": 3725.0, "pid": 4242, "pipelines": len(pipelines),
                       "threads": 7, "processes": 0, "rss_bytes": 50_000_000},
            "pipelines": pipelines}  # fmt: skip


ORDERS_GRAPH = {
    "nodes": [{"id": "read", "kind": "producer", "threads": 1, "processes": 0, "auto_start": False},
              {"id": "enrich", "kind": "processor", "threads": 4, "processes": 0, "auto_start": False},
              {"id": "store", "kind": "consumer", "threads": 1, "processes": 0, "auto_start": False}],
    "edges": [{"from": "read", "to": "enrich", "route": "direct"},
              {"from": "enrich", "to": "store", "route": "direct"}],
}  # fmt: skip


class FakeSource:
    address = ADDRESS

    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = doc or stats_doc()
        self.calls: list[tuple[Any, ...]] = []
        self.down = False
        self.garbage = False  # stats() raises what a non-JSON body would
        self.answer: dict[str, Any] | ClientError = {"run": "r-000007", "pipeline": "orders", "stage": "read"}
        self.closed = False

    def _call(self, *call: Any) -> None:
        self.calls.append(call)
        if self.down:
            raise Unreachable(f"cannot reach the pipelined daemon at {ADDRESS} (Connection refused); "
                              "is it running? (--api)")  # fmt: skip

    def count(self, name: str) -> int:
        return sum(1 for call in self.calls if call[0] == name)

    def stats(self) -> dict[str, Any]:
        self._call("stats")
        if self.garbage:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        return copy.deepcopy(self.doc)

    def pipeline(self, name: str) -> dict[str, Any]:
        self._call("pipeline", name)
        return {"name": name, "state": self.doc["pipelines"][name]["state"], "error": f"{name}.toml: boom"}

    def graph(self, name: str) -> dict[str, Any]:
        self._call("graph", name)
        return copy.deepcopy(ORDERS_GRAPH)

    def _act(self) -> dict[str, Any]:
        if isinstance(self.answer, ClientError):
            raise self.answer
        return dict(self.answer)

    def trigger(self, name: str, stage: str, body: dict[str, Any] | None) -> dict[str, Any]:
        self._call("trigger", name, stage, body)
        return self._act()

    def drain(self, name: str) -> dict[str, Any]:
        self._call("drain", name)
        return self._act()

    def close(self) -> None:
        self.closed = True
