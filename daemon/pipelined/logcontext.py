"""The log context every layer shares: pipeline / stage / run fields on each record.

    with log_context(pipeline="orders", stage="enrich"):  # set them for a thread / block
        log.info("started")
    token = enter_log_context("orders", "enrich", "r-000001")   # the engine's hot path
    exit_log_context(token)
    pipeline_logger("orders", stage="enrich")             # a LoggerAdapter with those fields

The handlers and formats (text, JSON, journal) are the host's (`pipelined.host.logs`); they read
the context through `ContextFilter`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

CONTEXT_FIELDS = ("pipeline", "stage", "run")
_NO_CONTEXT: Mapping[str, str | None] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str | None]] = contextvars.ContextVar(
    "pipelined_log_context", default=_NO_CONTEXT
)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add pipeline / stage / run to every record logged inside the block (this thread/task)."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {sorted(unknown)}")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def enter_log_context(pipeline: str, stage: str | None, run: str | None) -> contextvars.Token[Mapping[str, str | None]]:
    """The fast form of `log_context` for the engine's hot path (one call per chunk): records
    logged by user code in this thread (or asyncio task) carry these fields until
    `exit_log_context(token)`."""
    return _context.set({"pipeline": pipeline, "stage": stage, "run": run})


def enter_log_fields(fields: Mapping[str, str | None]) -> contextvars.Token[Mapping[str, str | None]]:
    """Like `enter_log_context` with a mapping of the caller's (read only when a record is
    logged: the engine's fused chains work out `stage` then)."""
    return _context.set(fields)


def exit_log_context(token: contextvars.Token[Mapping[str, str | None]]) -> None:
    _context.reset(token)


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds fixed pipeline / stage / run fields to what it logs (explicit `extra` wins)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def pipeline_logger(
    pipeline: str, stage: str | None = None, run: str | None = None, name: str = "pipelined"
) -> ContextAdapter:
    fields = {"pipeline": pipeline, "stage": stage, "run": run}
    return ContextAdapter(logging.getLogger(name), {k: v for k, v in fields.items() if v is not None})


class ContextFilter(logging.Filter):
    """Gives every record `pipeline`, `stage` and `run` attributes (from extra, context, or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        return True


def preformatted_line(message: str, level: int = logging.WARNING, name: str = "pipelined") -> bytes:
    """`message` as the stderr handler would write it (for a signal handler: formatting takes no
    lock, and the caller writes it with `os.write`)."""
    record = logging.LogRecord(name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stderr:
            for name_ in CONTEXT_FIELDS:
                setattr(record, name_, None)
            return (handler.format(record) + "\n").encode()
    return f"pipelined: {message}\n".encode()
