"""Daemon logging: text, JSON lines or the journal; every record carries pipeline, stage and run.

    configure_logging(level="info", log_format="auto")    # -> the format used ("text", ...)
    log = logging.getLogger("pipelined.engine")
    log.warning("retrying", extra={"pipeline": "orders", "stage": "enrich", "run": "r-000001"})

The fields come from `extra`, or from the context set with `pipelined.logcontext.log_context`
(shared by every layer; `ContextFilter` copies it onto each record).

Formats:
- text: `2026-01-01T12:00:00.123Z INFO pipelined.engine [orders/enrich run=r-000001] message`
- json: one orjson object per line: ts, level, logger, message, pipeline, stage, run, exception
- journal: systemd.journal.JournalHandler with PIPELINE=, STAGE=, RUN= fields
- auto: journal when JOURNAL_STREAM names stderr's device:inode (started by systemd), else text
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import orjson

from pipelined.logcontext import CONTEXT_FIELDS, ContextFilter


def _context_label(record: logging.LogRecord) -> str:
    pipeline, stage, run = (getattr(record, name, None) for name in CONTEXT_FIELDS)
    parts = "/".join(p for p in (pipeline, stage) if p)
    if run:
        parts = f"{parts} run={run}" if parts else f"run={run}"
    return f" [{parts}]" if parts else ""


def _timestamp(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record.created)} {record.levelname} {record.name}"
            f"{_context_label(record)} {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class JournalFieldsFilter(logging.Filter):
    """Copies pipeline / stage / run into the upper-case journal fields PIPELINE= STAGE= RUN=."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                setattr(record, name.upper(), str(value))
        return True


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """True when JOURNAL_STREAM (`device:inode`) names the file stderr is connected to."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def resolve_format(log_format: str, environ: Mapping[str, str] | None = None) -> str:
    if log_format == "auto":
        return "journal" if stderr_is_journal(environ) else "text"
    return log_format


def make_handler(log_format: str) -> logging.Handler:
    """A handler for an already resolved format (text, json, journal)."""
    handler: logging.Handler
    if log_format == "journal":
        from systemd.journal import JournalHandler  # the C extension loads only when the journal is used

        handler = JournalHandler(SYSLOG_IDENTIFIER="pipelined")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    if log_format == "journal":
        handler.addFilter(JournalFieldsFilter())
    return handler


def logs_to_stderr() -> bool:
    """True when the root logger writes to stderr (text or json), not to the journal."""
    return any(
        isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr
        for h in logging.getLogger().handlers
    )


def configure_logging(level: str = "info", log_format: str = "auto") -> str:
    """Replace the root handlers with one for `log_format`; returns the format in use."""
    resolved = resolve_format(log_format)
    handler = make_handler(resolved)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Python warnings and uncaught exceptions become log records too, so every line on stderr
    # has the configured format (`--log-format json`: every line is a JSON object).
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return resolved


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("pipelined").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("pipelined").error(
        "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )
