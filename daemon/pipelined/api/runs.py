"""Triggering runs and reading them back: `/pipelines/{name}/stages/{stage}/trigger`, `.../runs`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from pipelined import tracing
from pipelined.api.blocking import call, call_trigger, control_of, wait_until
from pipelined.api.openapi_ops import TriggerOperation, error_responses
from pipelined.api.responses import OrjsonResponse, json_response
from pipelined.api.schemas import Run, TriggerAccepted
from pipelined.api.validation import (
    TRIGGER_TIMEOUT_DEFAULT,
    TRIGGER_TIMEOUT_MAX,
    check_body_fits_stage,
    check_timeout,
    parse_trigger_body,
)
from pipelined.errors import NotFound
from pipelined.supervisor.control import Control

AnyRequest = Request[Any, Any, Any]


class RunsController(Controller):
    path = "/pipelines/{name:str}"
    tags = ["runs"]

    @post(
        "/stages/{stage:str}/trigger",
        status_code=202,
        summary="Start a run at a stage (optionally wait for it to finish)",
        operation_class=TriggerOperation,
        responses={
            200: ResponseSpec(data_container=Run, description="With ?wait=true: the finished run"),
            202: ResponseSpec(
                data_container=TriggerAccepted | Run,
                description="The run was started (with ?wait=true: the run, still going at the timeout)",
            ),
            **error_responses(400, 404, 409, 413, 429, 503),
        },
    )
    async def trigger(
        self,
        request: AnyRequest,
        name: FromPath[str],
        stage: FromPath[str],
        wait: FromQuery[bool] = False,
        timeout: Annotated[
            float,
            QueryParameter(
                ge=0,
                le=TRIGGER_TIMEOUT_MAX,
                schema_extra={"minimum": 0},  # Litestar drops a falsy `ge` from the schema
                description="Seconds to wait (default 30, at most 300)",
            ),
        ] = TRIGGER_TIMEOUT_DEFAULT,
    ) -> OrjsonResponse:
        wait_for = check_timeout(timeout, TRIGGER_TIMEOUT_DEFAULT, TRIGGER_TIMEOUT_MAX)
        args, items, priority = parse_trigger_body(await request.body())
        control = control_of(request)
        traced = {k: v for k in ("traceparent", "tracestate") if (v := request.headers.get(k))} if tracing.TRACER else {}
        accepted = await call_trigger(request, _checked_trigger, control, name, stage, args, items, priority, traced)
        if not wait:
            return json_response(accepted, 202)
        ended = await call(request, control.run_waiter, name, accepted["run"])
        # on the event loop: a waiting caller holds no thread
        await wait_until(ended, TRIGGER_TIMEOUT_DEFAULT if wait_for is None else wait_for)
        run = await call(request, control.run, name, accepted["run"])
        return json_response(run, 200 if run.get("state") != "running" else 202)

    @get(
        "/runs",
        summary="Recent runs, newest first",
        responses={200: ResponseSpec(data_container=list[Run], description="Runs"), **error_responses(404)},
    )
    async def runs(self, request: AnyRequest, name: FromPath[str]) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).runs, name))

    @get(
        "/runs/{run:str}",
        summary="One run",
        responses={200: ResponseSpec(data_container=Run, description="The run"), **error_responses(404)},
    )
    async def run(self, request: AnyRequest, name: FromPath[str], run: FromPath[str]) -> OrjsonResponse:
        return json_response(await call(request, control_of(request).run, name, run))


def _checked_trigger(
    control: Control,
    name: FromPath[str],
    stage: FromPath[str],
    args: dict[str, Any] | None,
    items: list[Any] | None,
    priority: int | None,
    trace_headers: dict[str, str],
) -> Any:
    """Reject `args` for a non-producer / `items` for a producer before the Control sees them.
    With tracing on, the run's span is a child of the request's `traceparent` (the whole
    trigger runs in this thread: pipelined.tracing.incoming)."""
    if args is not None or items is not None:
        try:
            rows = control.pipeline(name).get("stages") or []
        except NotFound:
            rows = []  # the trigger below answers 404 with the Control's own words
        check_body_fits_stage(rows, name, stage, args, items)
    with tracing.incoming(trace_headers):
        return control.trigger(name, stage, args, items, priority=priority)
