"""Property: any valid pipeline document, written out with tomli-w, parses back to exactly the
values it holds (defaults filled in, overrides resolved); one wrong key among valid ones is
reported at its own line, and nothing else is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelined.graph.check import parse_pipeline

PATH = Path("/nonexistent/conf.d/prop.toml")
durations = st.sampled_from([("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), (1, 1.0), (0.5, 0.5)])
overrides = st.fixed_dictionaries(
    {},
    optional={
        "queue_size": st.integers(1, 10_000),
        "on_full": st.sampled_from(["block", "drop_oldest", "reject"]),
        "max_retries": st.integers(0, 10),
        "retry_backoff": durations,
    },
)
workers = st.fixed_dictionaries({}, optional={"threads": st.integers(1, 16)}) | st.fixed_dictionaries(
    {"processes": st.integers(1, 4)},
    optional={
        "process_mode": st.sampled_from(["pool", "fork_per_item"]),
        "max_items_per_worker": st.integers(0, 1000),
    },
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    top: dict[str, Any] = draw(overrides)
    stages: list[dict[str, Any]] = [{"name": "src", "kind": "producer", "call": "pipelined.stages:count"}]
    for index in range(draw(st.integers(0, 4))):
        stage = {"name": f"p{index}", "call": "pipelined.stages:log", **draw(workers), **draw(overrides)}
        stages.append(stage)
    stages.append({"name": "sink", "kind": "consumer", "call": "pipelined.stages:log", **draw(overrides)})
    top["stage"] = stages
    return top


def plain(value: Any) -> Any:
    """The TOML-writable form (durations drawn as (text, seconds) pairs → text)."""
    if isinstance(value, tuple):
        return value[0]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def seconds(value: Any, default: float) -> float:
    return default if value is None else float(value[1])


@settings(max_examples=60, deadline=None)
@given(documents())
def test_valid_documents_round_trip(document: dict[str, Any]) -> None:
    spec, problems = parse_pipeline(tomli_w.dumps(plain(document)), PATH)
    assert spec is not None, [str(p) for p in problems]
    assert [p for p in problems if p.severity == "error"] == []
    top_backoff = seconds(document.get("retry_backoff"), 0.1)
    assert spec.retry_backoff == top_backoff
    for raw, stage in zip(document["stage"], spec.stages, strict=True):
        assert stage.name == raw["name"] and stage.call == raw["call"]
        assert stage.threads == raw.get("threads") and stage.processes == raw.get("processes")
        assert stage.process_mode == raw.get("process_mode", "pool")
        assert stage.max_items_per_worker == raw.get("max_items_per_worker", 0)
        assert stage.queue_size == raw.get("queue_size", document.get("queue_size", 1000))
        assert stage.on_full == raw.get("on_full", document.get("on_full", "block"))
        assert stage.max_retries == raw.get("max_retries", document.get("max_retries", 3))
        assert stage.retry_backoff == seconds(raw.get("retry_backoff"), top_backoff)


@settings(max_examples=40, deadline=None)
@given(documents(), st.data())
def test_one_unknown_key_is_the_only_error_and_points_at_its_line(
    document: dict[str, Any], data: st.DataObject
) -> None:
    stages = document["stage"]
    index = data.draw(st.integers(0, len(stages) - 1))
    stages[index]["threadz"] = 2
    text = tomli_w.dumps(plain(document))
    spec, problems = parse_pipeline(text, PATH)
    errors = [p for p in problems if p.severity == "error"]
    assert spec is None and len(errors) == 1
    (error,) = errors
    assert error.where == f"prop/{stages[index]['name']}/threadz"
    assert error.message == 'unknown key "threadz" (did you mean "threads"?)'
    assert error.line is not None and "threadz = 2" in text.splitlines()[error.line - 1]
