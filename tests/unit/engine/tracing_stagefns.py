"""Stage callables for the tracing tests: they report the span that is current while they run."""

from __future__ import annotations

from typing import Any


def current_span(x: Any) -> tuple[Any, str, str]:
    """(x, trace id, span id) of the span current in this thread / process right now."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return x, f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def current_span_async(x: Any) -> tuple[Any, str, str]:
    return current_span(x)


def fail_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x
