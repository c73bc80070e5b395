"""Messages between the daemon and its worker processes (pickled tuples over raw pipes).

daemon → worker: `(BATCH, run_id, items)` — a whole batch in one pickle;
`(ITEMWISE, run_id, [(item_pickle, type_name), ...])` — the same batch item by item, sent when the
worker could not unpickle the batch as a whole (both with a last field, the traceparent of the
batch's span, while tracing is on: pipelined.tracing); `(STOP,)`; `(PRODUCE, run_id, call_args)` and
`(CANCEL,)` for producers (producing.py).
worker → daemon: `(kind, payload, log_records)` with kind READY, START_FAILED `(where, error,
traceback)`, ROWS (a first part of the rows of the current batch), DONE (the remaining rows),
LOAD_FAILED (error text: the batch did not unpickle) or CLOSED (close() error text or None).
"""

from __future__ import annotations

import pickle
import signal
from collections.abc import Sequence
from typing import Any, cast

from pipelined.workers.batch_outcomes import BatchOutcomes
from pipelined.workers.calling import COMPACT, Compact, Row
from pipelined.workers.outcome import ItemOutcome

BATCH, ITEMWISE, STOP, PRODUCE, CANCEL = 1, 2, 3, 4, 5
READY, START_FAILED, ROWS, DONE, LOAD_FAILED, CLOSED = "ready", "start_failed", "rows", "done", "load_failed", "closed"

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=PROTOCOL)


def type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def pickle_error(stage: str, what: str, value: Any, exc: BaseException) -> str:
    """`PicklingError: ...` text naming the stage and the type that failed."""
    return (f"PicklingError: stage {stage!r}: {what} of type {type_name(value)} cannot be pickled "
            f"to cross the process boundary: {type(exc).__name__}: {exc}")


def first_unpicklable(values: list[Any]) -> tuple[Any, BaseException] | None:
    for value in values:
        try:
            pickle.dumps(value, protocol=PROTOCOL)
        except Exception as exc:
            return value, exc
    return None


def expand(payload: list[Row] | Compact) -> list[Row]:
    """Rows from either form of a reply."""
    if not isinstance(payload, tuple):
        return payload
    _tag, results, seconds, errors, filtered_when_none = payload
    return [
        errors[i] if i in errors
        else ([], [], filtered_when_none, None, None, seconds[i]) if value is None
        else ([value], [], False, None, None, seconds[i])  # plain lists: these rows may be re-pickled
        for i, value in enumerate(results)
    ]


def outcomes(payload: list[Row] | Compact) -> Sequence[ItemOutcome]:
    """ItemOutcomes from either form of a reply (the compact one is built lazily: BatchOutcomes)."""
    if not isinstance(payload, tuple) or payload[0] != COMPACT:
        return [ItemOutcome(*row) for row in cast(list[Row], payload)]
    _tag, results, seconds, errors, filtered_when_none = payload
    return BatchOutcomes(results, seconds, errors, filtered_when_none)


def encode_rows(kind: str, rows: list[Row] | Compact, logs: list[dict[str, Any]], stage: str) -> bytes:
    """Pickle a reply; a row whose outputs cannot be pickled becomes an error row for that item."""
    try:
        return dumps((kind, rows, logs))
    except Exception:
        rows = [_picklable_row(row, stage) for row in expand(rows)]
        try:
            return dumps((kind, rows, logs))
        except Exception:  # a log record field, most likely
            return dumps((kind, rows, []))


def _picklable_row(row: Row, stage: str) -> Row:
    try:
        dumps(row)
        return row
    except Exception as exc:
        outputs, routed, _filtered, _error, _tb, seconds = row
        bad = first_unpicklable([*outputs, *(item for _, item in routed)])
        value, cause = bad if bad is not None else (row, exc)
        return [], [], False, pickle_error(stage, "result", value, cause), None, seconds


def describe_exit(exitcode: int | None) -> str:
    """'killed by SIGKILL', 'exited with code 3', ... for a process's exit code."""
    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    if exitcode == 0:
        return "exited unexpectedly (code 0)"
    return f"exited with code {exitcode}"
