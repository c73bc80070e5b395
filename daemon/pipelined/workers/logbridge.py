"""Log records from worker processes back to the daemon's logging.

In the worker, `LogBuffer` replaces the root logger's handlers and keeps every record as a plain
dict (message already formatted, exception as text, `pipeline`/`stage`/`run` filled in). The
worker ships `take()` with each reply; the daemon calls `replay(records)`, which hands them to
the logger of the same name, so they go through the daemon's own handlers and formats.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

LogRecords = list[dict[str, Any]]

_SKIP = {"args", "exc_info", "msg", "message", "stack_info"}


class LogBuffer(logging.Handler):
    def __init__(self, pipeline: str, stage: str, level: int) -> None:
        super().__init__(level)
        self.pipeline = pipeline
        self.stage = stage
        self.run: str | None = None
        self._records: LogRecords = []
        self._guard = threading.Lock()

    def install(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(self)
        root.setLevel(self.level)
        logging.captureWarnings(True)  # user code's warnings reach the daemon's log format too

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {k: v for k, v in record.__dict__.items() if k not in _SKIP and _is_plain(v)}
            data["msg"] = record.getMessage()
            data["args"] = None
            if record.exc_info and not record.exc_text:
                data["exc_text"] = logging.Formatter().formatException(record.exc_info)
            if record.stack_info:
                data["stack_info"] = record.stack_info
            data.setdefault("pipeline", self.pipeline)
            data.setdefault("stage", self.stage)
            if self.run is not None:
                data.setdefault("run", self.run)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._records.append(data)

    def add(self, records: LogRecords) -> None:
        """Records that came from elsewhere (a fork_per_item child) and leave with ours."""
        with self._guard:
            self._records.extend(records)

    def take(self) -> LogRecords:
        with self._guard:
            records, self._records = self._records, []
        return records


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def replay(records: LogRecords) -> None:
    """Hand records from a worker to the daemon's loggers (levels and filters apply as usual)."""
    for data in records:
        logger = logging.getLogger(data.get("name") or "pipelined.worker")
        if logger.isEnabledFor(int(data.get("levelno", logging.INFO))):
            logger.handle(logging.makeLogRecord(data))
