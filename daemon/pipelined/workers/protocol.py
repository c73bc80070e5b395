"""Messages between the daemon and its worker processes (pickled tuples over raw pipes).

daemon → worker: `(BATCH, run_id, items)` — a whole batch in one pickle;
`(ITEMWISE, run_id, [(item_pickle, type_name), ...])` — the same batch item by item, sent when the
worker could not unpickle the batch as a whole. Both may end with the traceparent of the batch's
span (while tracing is on: pipelined.tracing), and for a callable that takes ctx with
`(traceparent or None, ctx.item_id of each item or None, ctx.attempt)`. `(STOP,)`;
`(PRODUCE, run_id, call_args)` and `(CANCEL,)` for producers (producing.py).
worker → daemon: `(kind, payload, log_records)` with kind READY, START_FAILED `(where, error,
traceback)`, ROWS (a first part of the rows of the current batch), DONE (the remaining rows),
LOAD_FAILED (error text: the batch did not unpickle) or CLOSED (close() error text or None).
"""

from __future__ import annotations

import importlib
import io
import pickle
import signal
import sys
import types
from collections.abc import Sequence
from typing import Any, cast

from pipelined.workers.batch_outcomes import BatchOutcomes
from pipelined.workers.calling import COMPACT, Compact, Row
from pipelined.workers.outcome import ItemOutcome

BATCH, ITEMWISE, STOP, PRODUCE, CANCEL = 1, 2, 3, 4, 5
READY, START_FAILED, ROWS, DONE, LOAD_FAILED, CLOSED = "ready", "start_failed", "rows", "done", "load_failed", "closed"

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(value: Any) -> bytes:
    """Pickle with the standard pickler; a class or function that is no longer the one its
    module names (a running version's code, while a reload has imported a newer copy of the
    module) is pickled by name instead, to be found in the receiving worker, which was forked
    with that version's code."""
    try:
        return pickle.dumps(value, protocol=PROTOCOL)
    except pickle.PicklingError:
        buffer = io.BytesIO()
        _ByNamePickler(buffer, protocol=PROTOCOL).dump(value)
        return buffer.getvalue()


def pickling_error(value: Any) -> BaseException | None:
    """None when `value` pickles (as `dumps` would), else the error."""
    try:
        dumps(value)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises is the answer
        return exc
    return None


def _by_name(module: str, qualname: str) -> Any:
    """A class or function looked up by name where the pickle is loaded."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class _ByNamePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, type | types.FunctionType):
            return NotImplemented
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
        if not isinstance(module, str) or "<locals>" in qualname or module not in sys.modules:
            return NotImplemented
        try:
            named = _by_name(module, qualname)
        except Exception:  # noqa: BLE001 - not there by that name: let pickle say so
            return NotImplemented
        if named is obj:
            return NotImplemented
        return _by_name, (module, qualname)


def type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def pickle_error(stage: str, what: str, value: Any, exc: BaseException) -> str:
    """`PicklingError: ...` text naming the stage and the type that failed."""
    return (f"PicklingError: stage {stage!r}: {what} of type {type_name(value)} cannot be pickled "
            f"to cross the process boundary: {type(exc).__name__}: {exc}")


def first_unpicklable(values: list[Any]) -> tuple[Any, BaseException] | None:
    for value in values:
        error = pickling_error(value)
        if error is not None:
            return value, error
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
