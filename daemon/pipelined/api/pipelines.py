"""`/pipelines...`: list, inspect, drain, start, stats, dead letters, graph, config writes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from pipelined.api.blocking import call, call_control, control_of, wait_until
from pipelined.api.openapi_ops import PutConfigOperation, error_responses
from pipelined.api.responses import OrjsonResponse, json_response, text_response
from pipelined.api.schemas import (
    DeadLetter,
    GraphJson,
    PipelineDetail,
    PipelineStats,
    PipelineSummary,
    Removed,
    StateChange,
)
from pipelined.api.validation import (
    DRAIN_TIMEOUT_MAX,
    check_pipeline_name,
    check_timeout,
    config_body_to_toml,
)
from pipelined.errors import Forbidden

GRAPH_MEDIA_TYPES = {"json": "application/json", "mermaid": "text/plain", "dot": "text/vnd.graphviz"}

AnyRequest = Request[Any, Any, Any]


def _ok(container: Any, description: str) -> ResponseSpec:
    return ResponseSpec(data_container=container, description=description)


class PipelinesController(Controller):
    path = "/pipelines"
    tags = ["pipelines"]

    @get("/", summary="List pipelines", responses={200: _ok(list[PipelineSummary], "Pipelines by name")})
    async def list_pipelines(self, request: AnyRequest) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).list_pipelines))

    @get(
        "/{name:str}",
        summary="One pipeline with its stages",
        responses={200: _ok(PipelineDetail, "The pipeline"), **error_responses(404)},
    )
    async def get_pipeline(self, request: AnyRequest, name: FromPath[str]) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).pipeline, name))

    @post(
        "/{name:str}/drain",
        status_code=202,
        summary="Drain a pipeline (optionally wait until drained)",
        responses={
            200: _ok(PipelineStats, "Drained (with ?wait=true): the pipeline's stats"),
            202: _ok(
                StateChange | PipelineStats, "Draining; with ?wait=true the stats when the timeout passed"
            ),
            **error_responses(400, 404, 409),
        },
    )
    async def drain(
        self,
        request: AnyRequest,
        name: FromPath[str],
        wait: FromQuery[bool] = False,
        timeout: Annotated[
            float | None,
            QueryParameter(
                ge=0,
                le=DRAIN_TIMEOUT_MAX,
                schema_extra={"minimum": 0},  # Litestar drops a falsy `ge` from the schema
                description="Seconds; default: the pipeline's drain_timeout",
            ),
        ] = None,
    ) -> OrjsonResponse:
        timeout = check_timeout(timeout, None, DRAIN_TIMEOUT_MAX)
        control = control_of(request)
        begun = await call_control(request, control.drain, name)
        if not wait:
            return json_response(begun, 202)
        check, wait_for = await call(request, control.drain_waiter, name, timeout)
        drained = await wait_until(check, wait_for)  # on the event loop: no thread held
        return json_response(await call(request, control.stats, name), 200 if drained else 202)

    @post(
        "/{name:str}/start",
        status_code=200,
        summary="Start a drained or failed pipeline",
        responses={200: _ok(StateChange, "Running"), **error_responses(404, 409)},
    )
    async def start(self, request: AnyRequest, name: FromPath[str]) -> OrjsonResponse:
        return json_response(await call_control(request, control_of(request).start, name))

    @get(
        "/{name:str}/stats",
        summary="Pipeline stats",
        responses={200: _ok(PipelineStats, "Counters and gauges per stage"), **error_responses(404)},
    )
    async def stats(self, request: AnyRequest, name: FromPath[str]) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).stats, name))

    @get(
        "/{name:str}/dead-letters",
        summary="Dead letters, newest first",
        responses={200: _ok(list[DeadLetter], "Dead letters"), **error_responses(400, 404)},
    )
    async def dead_letters(
        self,
        request: AnyRequest,
        name: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=100_000)] = 100,
    ) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).dead_letters, name, limit))

    @get(
        "/{name:str}/graph",
        summary="The pipeline's graph as JSON, Mermaid or DOT",
        responses={
            200: ResponseSpec(
                data_container=GraphJson,
                description="JSON (default); text/plain Mermaid flowchart; text/vnd.graphviz DOT digraph",
            ),
            **error_responses(400, 404),
        },
    )
    async def graph(
        self,
        request: AnyRequest,
        name: FromPath[str],
        format: FromQuery[Literal["json", "mermaid", "dot"]] = "json",
    ) -> OrjsonResponse:
        rendered = await call(request, control_of(request).graph, name, format)
        if format == "json":
            return json_response(rendered)
        return text_response(str(rendered), GRAPH_MEDIA_TYPES[format])

    @put(
        "/{name:str}",
        status_code=200,
        summary="Create or replace a pipeline file (validated first, applied like a reload)",
        operation_class=PutConfigOperation,
        responses={
            200: _ok(PipelineDetail, "Updated"),
            201: _ok(PipelineDetail, "Created"),
            **error_responses(400, 403, 413),
        },
    )
    async def put_config(self, request: AnyRequest, name: FromPath[str]) -> OrjsonResponse:
        _check_config_write(request)
        check_pipeline_name(name)
        body = await request.body()
        text = config_body_to_toml(body, request.headers.get("content-type", ""))
        created, pipeline = await call_control(request, control_of(request).put_config, name, text)
        return json_response(pipeline, 201 if created else 200)

    @delete(
        "/{name:str}",
        status_code=200,
        summary="Drain a pipeline and remove its file",
        responses={
            200: ResponseSpec(data_container=Removed, description="Drained and removed"),
            **error_responses(400, 403, 404),
        },
    )
    async def delete_config(self, request: AnyRequest, name: FromPath[str]) -> OrjsonResponse:
        _check_config_write(request)
        check_pipeline_name(name)
        return json_response(await call_control(request, control_of(request).delete_config, name))


def _check_config_write(request: AnyRequest) -> None:
    if not request.app.state.get("config_write"):
        raise Forbidden(
            "config writes are switched off: set [api] config_write = true in the daemon settings"
        )
