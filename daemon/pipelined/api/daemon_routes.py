"""Daemon-wide endpoints: `/health`, `/ready`, `/stats`, `/metrics`, `/graph`, `/reload`."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery

from pipelined.api.auth import PUBLIC
from pipelined.api.blocking import call, call_control, call_probe, control_of
from pipelined.api.metrics import CONTENT_TYPE, render_metrics
from pipelined.api.openapi_ops import error_responses
from pipelined.api.pipelines import GRAPH_MEDIA_TYPES
from pipelined.api.responses import OrjsonResponse, json_response, text_response
from pipelined.api.schemas import DaemonGraphJson, DaemonStats, HealthStatus, ReadyStatus, ReloadResult

AnyRequest = Request[Any, Any, Any]


class DaemonController(Controller):
    path = "/"
    tags = ["daemon"]

    @get(
        "/health",
        summary="Liveness (no token needed)",
        opt=PUBLIC,
        responses={
            200: ResponseSpec(data_container=HealthStatus, description="Serving"),
            503: ResponseSpec(data_container=HealthStatus, description="Shutting down"),
        },
    )
    async def health(self, request: AnyRequest) -> OrjsonResponse:
        if await call_probe(request, control_of(request).is_stopping):
            return json_response(
                {"status": "stopping", "status_code": 503, "detail": "the daemon is shutting down"}, 503
            )
        return json_response({"status": "ok"})

    @get(
        "/ready",
        summary="Readiness (no token needed)",
        opt=PUBLIC,
        responses={
            200: ResponseSpec(
                data_container=ReadyStatus, description="Every enabled pipeline started or failed"
            ),
            503: ResponseSpec(data_container=ReadyStatus, description="Starting, reloading all, or stopping"),
        },
    )
    async def ready(self, request: AnyRequest) -> OrjsonResponse:
        control = control_of(request)
        if await call_probe(request, control.is_ready):
            return json_response({"status": "ready"})
        if await call_probe(request, control.is_stopping):
            status, detail = "stopping", "the daemon is shutting down"
        else:
            status, detail = "starting", "the daemon is starting or reloading its pipelines"
        return json_response({"status": status, "status_code": 503, "detail": detail}, 503)

    @get(
        "/stats",
        summary="Daemon and every pipeline's stats",
        responses={200: ResponseSpec(data_container=DaemonStats, description="Stats"), **error_responses()},
    )
    async def stats(self, request: AnyRequest) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).daemon_stats))

    @get(
        "/metrics",
        summary="Prometheus text exposition",
        responses={
            200: ResponseSpec(
                data_container=str, description="text/plain; version=0.0.4", media_type="text/plain"
            ),
            **error_responses(),
        },
    )
    async def metrics(self, request: AnyRequest) -> OrjsonResponse:
        body = await call(request, render_metrics, control_of(request))
        return text_response(body.decode("utf-8"), CONTENT_TYPE)

    @get(
        "/graph",
        summary="Every pipeline and the links between them, as JSON, Mermaid or DOT",
        description="Links are written as `to = [\"pipeline/stage\"]` (docs/config.md). Mermaid and DOT "
        "draw each pipeline as a subgraph with its stages, and each link as a dashed edge between them.",
        responses={
            200: ResponseSpec(
                data_container=DaemonGraphJson,
                description="JSON (default); text/plain Mermaid flowchart; text/vnd.graphviz DOT digraph",
            ),
            **error_responses(400),
        },
    )
    async def graph(
        self, request: AnyRequest, format: FromQuery[Literal["json", "mermaid", "dot"]] = "json"
    ) -> OrjsonResponse:
        rendered = await call(request, control_of(request).daemon_graph, format)
        if format == "json":
            return json_response(rendered)
        return text_response(str(rendered), GRAPH_MEDIA_TYPES[format])

    @post(
        "/reload",
        status_code=200,
        summary="Reload every pipeline file (like SIGHUP); answers when done",
        responses={
            200: ResponseSpec(data_container=ReloadResult, description="What changed"),
            **error_responses(503),
        },
    )
    async def reload(self, request: AnyRequest) -> OrjsonResponse:
        return json_response(await call_control(request, control_of(request).reload))
