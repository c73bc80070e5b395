"""OpenAPI pieces Litestar cannot infer: raw request bodies we parse ourselves, and error responses.

The trigger and config-write handlers read the raw body (to name unknown fields, keep JSON
values uncoerced and accept TOML), so their request bodies are described here by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from pipelined.api.schemas import ErrorBody
from pipelined.config.rates import PRIORITY_MAX, PRIORITY_MIN

ERROR_DESCRIPTIONS = {
    400: "Malformed body, wrong types, unknown fields or arguments the stage does not accept",
    401: "Missing or wrong bearer token",
    403: "Switched off by configuration ([api] config_write)",
    404: "Unknown pipeline, stage or run",
    409: "The action does not fit the pipeline's current state",
    413: "Body larger than [api] max_body",
    429: 'The target queue is full (on_full = "reject")',
    503: "Not ready, stopping, or a blocking enqueue / version swap timed out",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """`{"status_code", "detail"}` responses for the given status codes (401 is always possible)."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=ERROR_DESCRIPTIONS[code])
        for code in sorted({401, *codes})
    }


TRIGGER_BODY_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="Producers take `args` (keyword arguments merged over the TOML's), other stages"
    " `items` (injected as one run). Give one of them or an empty body, never both. `priority`"
    " (-10..10; default: a producer's `priority` key, else 0): every queue of the pipeline serves"
    " items of higher-priority runs first.",
    properties={
        "args": Schema(type=OpenAPIType.OBJECT, additional_properties=True),
        "items": Schema(type=OpenAPIType.ARRAY, min_items=1, items=Schema()),
        "priority": Schema(type=OpenAPIType.INTEGER, minimum=PRIORITY_MIN, maximum=PRIORITY_MAX),
    },
    additional_properties=False,
    max_properties=2,
)


@dataclass
class TriggerOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            description='Optional: `{"args": {...}}` for a producer or `{"items": [...]}` for another stage.',
            content={"application/json": OpenAPIMediaType(schema=TRIGGER_BODY_SCHEMA)},
        )


@dataclass
class PutConfigOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The pipeline file: TOML text, or the same document as a JSON object"
            " (written out as TOML).",
            content={
                "application/toml": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                "application/json": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.OBJECT, additional_properties=True)
                ),
            },
        )
