"""Shared by the unit and integration fuzz tests: send schemathesis-generated requests for every
operation of an OpenAPI document (valid and invalid ones), assert no 5xx and well-formed errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

Sent = list[tuple[str, str, int]]


def fuzz_every_operation(
    schema: Any,
    send: Callable[[Any], Any],
    *,
    examples: int,
    known_path_values: Mapping[str, Sequence[str]],
    skip: Callable[[Any], bool] = lambda case: False,
) -> Sent:
    """Run `examples` positive and `examples` negative cases per operation; returns what was sent.

    Half the time, path parameters named in `known_path_values` are replaced by known values so
    requests reach real pipelines and stages, not only 404s.
    """
    sent: Sent = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), pin=st.booleans(), data=st.data())
            @settings(
                max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            def one(case: Any, pin: bool, data: st.DataObject) -> None:
                if pin and case.path_parameters:
                    for key, choices in known_path_values.items():
                        if key in case.path_parameters:
                            case.path_parameters[key] = data.draw(st.sampled_from(list(choices)))
                if skip(case):
                    return
                response = send(case)
                sent.append((case.method, case.formatted_path, response.status_code))
                assert response.status_code < 500, (
                    case.method,
                    case.formatted_path,
                    case.query,
                    response.text,
                )
                if response.status_code >= 400:
                    body = response.json()
                    assert body["status_code"] == response.status_code, response.text
                    assert isinstance(body["detail"], str) and "Traceback" not in body["detail"]

            try:
                one()
            except Unsatisfiable:
                continue  # nothing invalid can be generated for this operation (no parameters)
    return sent
