"""schemathesis against the OpenAPI document of the app over FakeControl: no 5xx, errors well-formed."""

from __future__ import annotations

from typing import Any

import schemathesis
from api_fuzzing import fuzz_every_operation
from fake_control import FakeControl

from pipelined.api import ApiSettings, create_app


def test_generated_requests_never_get_a_5xx() -> None:
    fake = FakeControl()
    fake.slow_runs = False
    app = create_app(fake, ApiSettings(config_write=True, max_body=4096))
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)

    def send(case: Any) -> Any:
        return case.call()

    sent = fuzz_every_operation(
        schema,
        send,
        examples=16,
        known_path_values={
            "name": ["orders", "broken"],
            "stage": ["read", "enrich", "store"],
            "run": ["r-000001"],
        },
    )
    assert len(sent) >= 200, len(sent)
    statuses = {status for _, _, status in sent}
    assert {200, 400, 404} <= statuses, statuses
    health = schema["/health"]["GET"].Case().call()
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
