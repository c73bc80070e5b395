"""OpenTelemetry traces of runs (pipelined.tracing) recorded by the SDK's in-memory exporter: a
span per run, a child span per stage batch with pipeline / stage / run / items / failures, the
batch span current inside the callable — in a worker process too — and nothing when tracing is
off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import engine_stagefns as fns
import pytest
from engine_helpers import finished_run, pipeline, running, stage
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from harness import PACKAGE_DIR
from pipelined import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def ids(span: ReadableSpan) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_run_span_with_a_child_span_per_stage_batch(spans: InMemorySpanExporter) -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 40}, auto_start=False),
        stage("work", call="inc", threads=2),
        stage("batch", "accumulator", max_size=10),
        stage("sink", "consumer", "collect", args={"key": "traced"}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        assert finished_run(rt, run_id)["state"] == "completed"
    found = by_name(spans)
    [run] = found["p run"]
    assert attrs(run) == {"pipelined.pipeline": "p", "pipelined.stage": "src", "pipelined.run": run_id,
                          "pipelined.items": 40, "pipelined.failures": 0, "pipelined.state": "completed",
                          "pipelined.finished": 4, "pipelined.filtered": 0}  # fmt: skip
    assert run.parent is None and run.status.status_code == StatusCode.UNSET
    for name, total in (("p/src", 40), ("p/work", 40), ("p/batch", 40), ("p/sink", 4)):
        batches = found[name]
        assert sum(attrs(s)["pipelined.items"] for s in batches) == total, name
        for span in batches:
            assert span.parent is not None and span.parent.span_id == run.context.span_id, name
            assert span.context.trace_id == run.context.trace_id
            assert attrs(span)["pipelined.run"] == run_id and attrs(span)["pipelined.stage"] == name[2:]
            assert attrs(span)["pipelined.failures"] == 0
            assert run.start_time <= span.start_time and span.end_time <= run.end_time
    assert len(found["p/batch"]) == 4  # one per batch it emits
    assert len(fns.COLLECTED.pop("traced")) == 4  # batches of 10


def test_failures_retries_and_a_failed_run(spans: InMemorySpanExporter) -> None:
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 6}, auto_start=False),
        stage("check", call="tracing_stagefns:fail_odd", max_retries=1, retry_backoff=0.01),
        stage("sink", "consumer", "collect", args={"key": "traced-fail"}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        assert finished_run(rt, run_id)["state"] == "failed"
    found = by_name(spans)
    [run] = found["p run"]
    assert attrs(run)["pipelined.failures"] == 3 and attrs(run)["pipelined.state"] == "failed"
    assert run.status.status_code == StatusCode.ERROR and "3 items were dead-lettered" in (run.status.description or "")
    checks = found["p/check"]
    assert sum(attrs(s)["pipelined.failures"] for s in checks) == 6  # 3 odd items, each tried twice
    retries = [s for s in checks if attrs(s).get("pipelined.attempt") == 2]
    assert sum(attrs(s)["pipelined.items"] for s in retries) == 3
    assert all(s.status.status_code == StatusCode.ERROR for s in checks if attrs(s)["pipelined.failures"])
    fns.COLLECTED.pop("traced-fail", None)


@pytest.mark.parametrize("where", ["thread", "async", "process", "fork_per_item"])
def test_the_batch_span_is_current_inside_the_callable(spans: InMemorySpanExporter, where: str) -> None:
    """User code's own spans nest under its stage's batch span — across the process boundary too."""
    options: dict[str, Any] = {
        "thread": {"call": "tracing_stagefns:current_span"},
        "async": {"call": "tracing_stagefns:current_span_async"},
        "process": {"call": "tracing_stagefns:current_span", "processes": 1, "start_method": "fork"},
        "fork_per_item": {"call": "tracing_stagefns:current_span", "processes": 1, "start_method": "fork",
                          "process_mode": "fork_per_item"},
    }[where]  # fmt: skip
    key = f"traced-{where}"
    spec = pipeline(
        stage("src", "producer", "count_to", args={"n": 5}, auto_start=False),
        stage("work", **options),
        stage("sink", "consumer", "collect", args={"key": key}),
    )
    with running(spec) as rt:
        run_id = rt.trigger("src")
        assert finished_run(rt, run_id)["state"] == "completed"
    seen = fns.COLLECTED.pop(key)
    found = by_name(spans)
    [run] = found["p run"]
    batches = {ids(s) for s in found["p/work"]}
    assert len(seen) == 5
    for _x, trace_id, span_id in seen:
        assert (trace_id, span_id) in batches  # the callable ran inside its batch's span
        assert trace_id == f"{run.context.trace_id:032x}"


def test_off_no_spans_and_no_trace_on_runs() -> None:
    assert tracing.TRACER is None
    spec = pipeline(stage("src", "producer", "count_to", args={"n": 3}, auto_start=False),
                    stage("sink", "consumer", "collect", args={"key": "untraced"}))  # fmt: skip
    with running(spec) as rt:
        run_id = rt.trigger("src")
        finished_run(rt, run_id)
        assert rt.book.runs.run(run_id).trace is None
    fns.COLLECTED.pop("untraced")


def test_configure_reads_the_standard_variables() -> None:
    assert tracing.wanted({}) == [] and tracing.wanted({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) == []
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console, otlp"}) == ["console", "otlp"]
    code = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
from pipelined import tracing
print("unset", tracing.configure({}), tracing.TRACER is None)
print("unknown", tracing.configure({"OTEL_TRACES_EXPORTER": "nope"}), tracing.TRACER is None)
print("console", tracing.configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "svc"}))
from opentelemetry import trace
print("global", trace.get_tracer_provider() is tracing._provider)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(PACKAGE_DIR)})  # fmt: skip
    lines = out.stdout.splitlines()
    assert "unset False True" in lines and "unknown False True" in lines, out.stdout + out.stderr
    assert any("no exporter named 'nope'" in line for line in lines)
    assert "console True" in lines and "global True" in lines
    assert "INFO tracing on: OTEL_TRACES_EXPORTER=console, service.name=svc" in lines


def test_configured_without_the_sdk_says_how_to_install_it() -> None:
    code = """
import sys
sys.modules["opentelemetry.sdk"] = None  # as if pipelined[otel] were not installed
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
from pipelined import tracing
print("on", tracing.configure({"OTEL_TRACES_EXPORTER": "otlp"}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(PACKAGE_DIR)})  # fmt: skip
    assert "on False" in out.stdout, out.stderr
    assert "OpenTelemetry SDK is not installed (pip install 'pipelined[otel]')" in out.stdout
