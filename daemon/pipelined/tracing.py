"""OpenTelemetry traces of runs, when the `otel` extra is installed and configured; else nothing.

    configure(os.environ)        # the daemon and each worker process, once at start
    tracing.TRACER is None       # off: the engine's only per-chunk cost is `run.trace is None`
    with incoming(headers): ...  # the API around a trigger: the run's parent is its traceparent
    run.trace = start_run(pipeline, stage, run_id)   # a span per run (child of the incoming one)
    batch = start_batch(run.trace, pipeline, stage, run_id, n, attempt)  # a child per chunk
    batch.end(failures)
    end_run(run.trace, run.to_dict())

Off unless `OTEL_TRACES_EXPORTER` names an exporter (unset or `none`: off — unlike the SDK's own
default of `otlp`, so a daemon never tries to reach a collector nobody configured) and
`OTEL_SDK_DISABLED` is not `true`. Exporter names resolve like the SDK's auto-configuration
(entry points `opentelemetry_traces_exporter`: `console`, `otlp_proto_http`, `otlp_proto_grpc`,
`otlp` …, each configured by its own `OTEL_EXPORTER_*` variables); the resource by
`OTEL_SERVICE_NAME` (default `pipelined`) and `OTEL_RESOURCE_ATTRIBUTES`, sampling by
`OTEL_TRACES_SAMPLER`, batching by `OTEL_BSP_*`. The provider becomes the global one, so spans
that user code makes inside a stage nest under that stage's batch span — in worker processes too,
where `attach_traceparent` restores the batch's context around each call.

This module is at the lowest layer (errors, logcontext) so the engine, the workers and the API
can all call it; it imports `opentelemetry` only when tracing is on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("pipelined.tracing")

TRACER: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None  # the TracerProvider configure() made (flushed by shutdown())
_incoming: contextvars.ContextVar[Any] = contextvars.ContextVar("pipelined_trace_incoming", default=None)

ATTR_PIPELINE = "pipelined.pipeline"
ATTR_STAGE = "pipelined.stage"
ATTR_RUN = "pipelined.run"
ATTR_ITEMS = "pipelined.items"
ATTR_FAILURES = "pipelined.failures"
ATTR_ATTEMPT = "pipelined.attempt"
ATTR_STATE = "pipelined.state"
INSTALL_HINT = "pip install 'pipelined[otel]'"


# -- on / off ---------------------------------------------------------------------------------
def wanted(environ: Mapping[str, str]) -> list[str]:
    """The exporter names OTEL_TRACES_EXPORTER asks for ([] = tracing off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    return [] if not names or names == ["none"] else [n for n in names if n != "none"]


def configure(environ: Mapping[str, str] | None = None, announce: bool = True) -> bool:
    """Turn tracing on when the environment asks for it and the SDK is installed; True if on.

    A worker process forked from a configured daemon keeps its provider (the SDK re-creates its
    export thread after a fork); one started fresh configures its own from the same variables."""
    global TRACER, _provider
    if TRACER is not None:
        return True
    names = wanted(os.environ if environ is None else environ)
    if not names:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER=%s but the OpenTelemetry SDK is not installed (%s): no traces",
                    ",".join(names), INSTALL_HINT)  # fmt: skip
        return False
    service = (os.environ if environ is None else environ).get("OTEL_SERVICE_NAME") or "pipelined"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporters = 0
    for name in names:
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
            exporters += 1
    if not exporters:
        return False
    trace.set_tracer_provider(provider)
    _provider = provider
    TRACER = trace.get_tracer("pipelined")
    if announce:
        log.info("tracing on: OTEL_TRACES_EXPORTER=%s, service.name=%s", ",".join(names), service)
    return True


def _exporter(name: str) -> Any:
    from importlib.metadata import entry_points

    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        log.warning("OTEL_TRACES_EXPORTER: no exporter named %r is installed (e.g. console, or otlp_proto_http "
                    "with opentelemetry-exporter-otlp-proto-http): ignored", name)  # fmt: skip
        return None
    try:
        return found[0].load()()
    except Exception as exc:  # noqa: BLE001 - a broken exporter must not stop the daemon
        log.warning("OTEL_TRACES_EXPORTER: exporter %r could not start: %s: %s", name, type(exc).__name__, exc)
        return None


def use_provider(provider: Any) -> None:
    """Trace into `provider` (a TracerProvider; tests pass one with an in-memory exporter), or
    stop tracing with None. Does not touch the global provider."""
    global TRACER
    TRACER = provider.get_tracer("pipelined") if provider is not None else None


def shutdown() -> None:
    """Flush and stop what configure() started (the daemon's exit)."""
    global TRACER, _provider
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()
    TRACER = _provider = None


# -- the API: where a run's trace comes from --------------------------------------------------
@contextlib.contextmanager
def incoming(headers: Mapping[str, str]) -> Iterator[None]:
    """Runs started inside the block (in this thread) are children of the `traceparent` (and
    `tracestate`) in `headers`; without a valid one they start a trace of their own."""
    if TRACER is None or "traceparent" not in headers:
        yield
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {key: headers[key] for key in ("traceparent", "tracestate") if key in headers}
    token = _incoming.set(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        _incoming.reset(token)


# -- the engine -------------------------------------------------------------------------------
def start_run(pipeline: str, stage: str, run_id: str, parent: Any = None) -> Any:
    """The span of a run (its `Run.trace`); its parent is `parent` (a span, e.g. of the run that
    linked to this one), else the trigger's traceparent, else none."""
    if TRACER is None:
        return None
    from opentelemetry import trace

    context = trace.set_span_in_context(parent) if parent is not None else _incoming.get()
    return TRACER.start_span(f"{pipeline} run", context=context, attributes={
        ATTR_PIPELINE: pipeline, ATTR_STAGE: stage, ATTR_RUN: run_id})  # fmt: skip


def end_run(span: Any, run: Mapping[str, Any]) -> None:
    """End a run's span with its final counts and state (status ERROR when it failed)."""
    from opentelemetry.trace import Status, StatusCode

    items = run.get("items") or {}
    span.set_attributes({ATTR_ITEMS: items.get("produced", 0), ATTR_FAILURES: items.get("dead_lettered", 0),
                         ATTR_STATE: run.get("state", ""), "pipelined.finished": items.get("finished", 0),
                         "pipelined.filtered": items.get("filtered", 0)})  # fmt: skip
    if run.get("state") == "failed":
        span.set_status(Status(StatusCode.ERROR, str(run.get("error") or "failed")))
    span.end()


class Batch:
    """The span of one chunk at one stage, current in this thread / task until `end()`."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self._token = token

    def traceparent(self) -> str:
        """For a worker process: `attach_traceparent` there makes this span the current one."""
        context = self.span.get_span_context()
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def end(self, failures: int, items: int | None = None) -> None:
        from opentelemetry import context

        if items is not None:
            self.span.set_attribute(ATTR_ITEMS, items)
        self.span.set_attribute(ATTR_FAILURES, failures)
        if failures:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, f"{failures} of the chunk's items failed"))
        if self._token is not None:
            with contextlib.suppress(ValueError):  # detached in another context: nothing to undo
                context.detach(self._token)
        self.span.end()


def start_batch(run_span: Any, pipeline: str, stage: str, run_id: str, items: int, attempt: int = 0,
                current: bool = True) -> Batch:  # fmt: skip
    """A child of `run_span` for `items` items at `stage` (made current when `current`, so user
    code's own spans nest under it). Called only when `run_span` is not None (tracing on)."""
    from opentelemetry import context, trace

    attributes = {ATTR_PIPELINE: pipeline, ATTR_STAGE: stage, ATTR_RUN: run_id, ATTR_ITEMS: items}
    if attempt:
        attributes[ATTR_ATTEMPT] = attempt + 1
    span = TRACER.start_span(f"{pipeline}/{stage}", context=trace.set_span_in_context(run_span),
                             attributes=attributes)  # fmt: skip
    token = context.attach(trace.set_span_in_context(span)) if current else None
    return Batch(span, token)


# -- worker processes -------------------------------------------------------------------------
def attach_traceparent(traceparent: str | None) -> Any:
    """In a worker: make the daemon's batch span current for the calls that follow (a token for
    `detach`), or None when there is none (or OpenTelemetry is not importable here)."""
    if not traceparent:
        return None
    try:
        from opentelemetry import context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    return context.attach(TraceContextTextMapPropagator().extract({"traceparent": traceparent}))


def detach(token: Any) -> None:
    if token is not None:
        from opentelemetry import context

        with contextlib.suppress(ValueError):
            context.detach(token)
