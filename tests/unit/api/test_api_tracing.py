"""A trigger's `traceparent` header becomes the parent of the run's span: the real API app over
the real supervisor and engine, in this process, with the SDK's in-memory exporter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harness import wait_for
from pipelined import tracing
from pipelined.api import ApiSettings, create_app
from pipelined.config.settings import Settings
from pipelined.supervisor.control import SilentNotifier
from pipelined.supervisor.loop import Supervisor

PIPELINE = """
[[stage]]
name = "numbers"
kind = "producer"
call = "pipelined.stages:count"
auto_start = false

[[stage]]
name = "keep"
kind = "consumer"
call = "pipelined.stages:write_jsonl"
args = {{ path = "{out}" }}
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def traced_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient[Any], InMemorySpanExporter]]:
    # in-process: the built-in write_jsonl writes only under the roots the daemon would export
    monkeypatch.setenv("PIPELINED_WRITE_PATHS", str(tmp_path))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "orders.toml").write_text(PIPELINE.format(out=tmp_path / "out.jsonl"))
    settings = Settings().with_overrides(conf_dir=conf, state_dir=tmp_path / "state", drain_timeout=5.0)
    supervisor = Supervisor(settings, SilentNotifier())
    loop = threading.Thread(target=supervisor.run_loop, name="test-supervisor")
    tracing.use_provider(provider)
    try:
        loop.start()  # the first apply, then ready
        wait_for(supervisor.is_ready, 20, what="the supervisor ready")
        with TestClient(create_app(supervisor, ApiSettings())) as client:
            yield client, exporter
    finally:
        supervisor.request_stop("test")  # drains every pipeline, then run_loop returns
        loop.join(30)
        tracing.use_provider(None)


def run_span(exporter: InMemorySpanExporter, run_id: str) -> Any:
    def found() -> Any:
        return next((s for s in exporter.get_finished_spans()
                     if s.name == "orders run" and (s.attributes or {}).get("pipelined.run") == run_id), None)  # fmt: skip

    return wait_for(found, 10, what=f"the span of run {run_id}")


def test_traceparent_of_the_trigger_is_the_runs_parent(traced_app: tuple[TestClient[Any], InMemorySpanExporter]) -> None:
    client, exporter = traced_app
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=1"}
    r = client.post("/pipelines/orders/stages/numbers/trigger?wait=true", json={"args": {"stop": 3}}, headers=headers)
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    span = run_span(exporter, r.json()["run"])
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID and span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "1"
    children = [s for s in exporter.get_finished_spans() if s.parent is not None and s.parent.span_id == span.context.span_id]
    assert {s.name for s in children} == {"orders/numbers", "orders/keep"}


def test_without_or_with_a_bad_traceparent_a_run_starts_its_own_trace(
    traced_app: tuple[TestClient[Any], InMemorySpanExporter],
) -> None:
    client, exporter = traced_app
    plain = client.post("/pipelines/orders/stages/numbers/trigger", json={"args": {"stop": 2}})
    bad = client.post("/pipelines/orders/stages/numbers/trigger", json={"args": {"stop": 2}},
                      headers={"traceparent": "not-a-traceparent"})  # fmt: skip
    assert plain.status_code == bad.status_code == 202
    for response in (plain, bad):
        span = run_span(exporter, response.json()["run"])
        assert span.parent is None and f"{span.context.trace_id:032x}" != TRACE_ID
