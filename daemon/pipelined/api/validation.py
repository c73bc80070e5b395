"""Checks on what a client sends that the `Control` should never see malformed.

Each raises `pipelined.errors.BadRequest` with a sentence naming the field, parameter or name.
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any

import tomli_w

from pipelined.api.responses import JsonBodyError, decode_json
from pipelined.config.rates import PRIORITY_MAX, PRIORITY_MIN
from pipelined.errors import BadRequest

PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
TRIGGER_FIELDS = ("args", "items", "priority")
TRIGGER_TIMEOUT_DEFAULT = 30.0
TRIGGER_TIMEOUT_MAX = 300.0
DRAIN_TIMEOUT_MAX = 3600.0


def check_pipeline_name(name: str) -> str:
    if not PIPELINE_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid pipeline name {name!r}: names are 1-64 characters of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit"
        )
    return name


def check_timeout(timeout: float | None, default: float | None, maximum: float) -> float | None:
    """The `timeout` query parameter: finite, >= 0 and <= maximum; None means `default`."""
    if timeout is None:
        return default
    if not math.isfinite(timeout) or timeout < 0 or timeout > maximum:
        raise BadRequest(f"query parameter 'timeout': must be a number of seconds from 0 to {maximum:g}")
    return timeout


def parse_trigger_body(body: bytes) -> tuple[dict[str, Any] | None, list[Any] | None, int | None]:
    """`{"args": {...}}`, `{"items": [...]}` (each with an optional `"priority"`) or an empty
    body → (args, items, priority)."""
    if not body.strip():
        return None, None, None
    try:
        document = decode_json(body)
    except JsonBodyError as exc:
        raise BadRequest(str(exc)) from None
    if document is None:
        return None, None, None
    if not isinstance(document, dict):
        raise BadRequest(
            f"request body must be a JSON object with 'args' or 'items', not {_json_type(document)}"
        )
    unknown = sorted(k for k in document if k not in TRIGGER_FIELDS)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise BadRequest(
            f"request body: unknown field(s) {names}; only 'args' or 'items', and 'priority', are accepted"
        )
    args, items = document.get("args"), document.get("items")
    if "args" in document and "items" in document:
        raise BadRequest("request body: give either 'args' (producers) or 'items' (other stages), not both")
    if "args" in document and not isinstance(args, dict):
        raise BadRequest(
            f"request body: 'args' must be an object of keyword arguments, not {_json_type(args)}"
        )
    if "items" in document and (not isinstance(items, list) or not items):
        what = "an empty list" if items == [] else _json_type(items)
        raise BadRequest(f"request body: 'items' must be a non-empty list, not {what}")
    return args, items, _priority(document)


def _priority(document: dict[str, Any]) -> int | None:
    if "priority" not in document:
        return None
    value = document["priority"]
    if isinstance(value, int) and not isinstance(value, bool) and PRIORITY_MIN <= value <= PRIORITY_MAX:
        return value
    shown = repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else _json_type(value)
    raise BadRequest(f"request body: 'priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, not {shown}")


def check_body_fits_stage(
    stage_rows: list[dict[str, Any]], pipeline: str, stage: str, args: Any, items: Any
) -> None:
    """400 when `args` goes to a non-producer or `items` to a producer (unknown stages: the Control decides)."""
    kind = next((row.get("kind") for row in stage_rows if row.get("name") == stage), None)
    if kind is None:
        return
    if kind == "producer" and items is not None:
        raise BadRequest(
            f"pipeline {pipeline!r} stage {stage!r} is a producer: trigger it with 'args', not 'items'"
        )
    if kind != "producer" and args is not None:
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        raise BadRequest(f"pipeline {pipeline!r} stage {stage!r} is {article} {kind}: inject 'items', not 'args'")


def config_body_to_toml(body: bytes, content_type: str) -> str:
    """The body of `PUT /pipelines/{name}` as TOML text: TOML as sent (application/toml), or a
    JSON object (application/json) via tomli-w. Other media types never get here (415)."""
    if not body.strip():
        raise BadRequest("request body is empty: send the pipeline as TOML (application/toml) or JSON")
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        try:
            document = decode_json(body)
        except JsonBodyError as exc:
            raise BadRequest(str(exc)) from None
        if not isinstance(document, dict):
            raise BadRequest(
                f"request body must be a JSON object (the pipeline document), not {_json_type(document)}"
            )
        try:
            return tomli_w.dumps(document)
        except RecursionError:
            raise BadRequest("request body cannot be written as TOML: arrays or tables nested too deeply") from None
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"request body cannot be written as TOML: {exc}") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8 text: byte {exc.start} is invalid") from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"request body is not valid TOML: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is not valid TOML: arrays or tables nested too deeply") from None
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
