"""Traces from a real daemon process configured only by the standard OTEL_* variables (the
console exporter writes the spans to the daemon's stdout): the trigger's traceparent is the
run's parent, each stage's batches are the run's children, and a span user code makes in a
worker process is a child of its batch's span."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from harness import DaemonProcess

STAGES = """
from opentelemetry import trace

def numbers(n=5):
    yield from range(n)

def work(x):
    with trace.get_tracer("user-code").start_as_current_span("user-work"):
        return x * 2

def keep(x):
    pass
"""
PIPELINE = """
[[stage]]
name = "read"
kind = "producer"
call = "tracestages:numbers"
auto_start = false

[[stage]]
name = "work"
call = "tracestages:work"
processes = 1

[[stage]]
name = "keep"
kind = "consumer"
call = "tracestages:keep"
"""
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def exported_spans(text: str) -> list[dict[str, Any]]:
    """The console exporter's spans: indented JSON objects, each from a line `{` to a line `}`."""
    return [orjson.loads(block) for block in re.findall(r"^\{\n.*?^\}$", text, flags=re.S | re.M)]


def test_spans_of_a_run_from_a_real_daemon(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, env={"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50",
                                          "OTEL_SERVICE_NAME": "pipelined-test"})  # fmt: skip
    daemon.write_module("tracestages", STAGES)
    daemon.write_pipeline("flow", PIPELINE)
    try:
        daemon.start()
        daemon.wait_log("tracing on: OTEL_TRACES_EXPORTER=console, service.name=pipelined-test")
        r = daemon.client.post("/pipelines/flow/stages/read/trigger?wait=true", json={"args": {"n": 5}},
                               headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})  # fmt: skip
        assert r.status_code == 200 and r.json()["state"] == "completed", r.text
        run_id = r.json()["run"]
        daemon.wait_for(lambda: len([s for s in exported_spans(daemon.logs()) if s["name"] == "user-work"]) == 5,
                        15, what="the worker's own spans exported")  # fmt: skip
    finally:
        assert daemon.stop() == 0  # flushes the daemon's spans
    spans = exported_spans(daemon.logs())
    [run] = [s for s in spans if s["name"] == "flow run"]
    assert run["context"]["trace_id"] == f"0x{TRACE_ID}" and run["parent_id"] == f"0x{PARENT_ID}"
    assert run["attributes"]["pipelined.run"] == run_id and run["attributes"]["pipelined.items"] == 5
    assert run["resource"]["attributes"]["service.name"] == "pipelined-test"
    run_span = run["context"]["span_id"]
    stages = {name: [s for s in spans if s["name"] == f"flow/{name}"] for name in ("read", "work", "keep")}
    for name, batches in stages.items():
        assert batches and all(s["parent_id"] == run_span for s in batches), name
        assert sum(s["attributes"]["pipelined.items"] for s in batches) == 5, name
        assert all(s["context"]["trace_id"] == f"0x{TRACE_ID}" for s in batches)
    work_batches = {s["context"]["span_id"] for s in stages["work"]}
    user = [s for s in spans if s["name"] == "user-work"]
    assert len(user) == 5 and all(s["parent_id"] in work_batches for s in user)  # made in the worker process
    assert all(s["context"]["trace_id"] == f"0x{TRACE_ID}" for s in user)
