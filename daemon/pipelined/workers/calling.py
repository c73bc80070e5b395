"""Calling a stage's user code inside a worker process, one batch of items at a time.

The calling itself is `calls.invoke.Invoker` (pipelined/calls/invoke.py), so a stage behaves
the same in a worker process as in a thread: functions, generators, `async def`s, async
generators, classes (instantiated once per worker, TOML `args` to `__init__`, `setup()`/`close()`)
and `ctx`. This module turns every attempt into a row `(outputs, routed, filtered, error,
traceback, seconds)` — plain data that pickles cheaply; exceptions travel as text, never as objects.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from pipelined.calls.invoke import Invoker
from pipelined.workers.setup import WorkerSetup, import_ref, is_emit_target

Row = tuple[list[Any], list[tuple[str, Any]], bool, str | None, str | None, float]
# (COMPACT, results, seconds, errors by index, filtered_when_none): one value per item, None = nothing
Compact = tuple[str, list[Any], list[float], dict[int, Row], bool]
COMPACT = "c"


class StageCallable:
    def __init__(self, setup: WorkerSetup, stopping: Callable[[], bool]) -> None:
        target = import_ref(setup.call, setup.python_path)
        self.invoker = Invoker(setup.pipeline_spec, setup.stage_spec, target, stopping=stopping)
        self.pipeline = setup.pipeline
        self.stage = setup.stage
        self.kind = setup.kind
        self.targets = setup.stage_names
        self.fast: Callable[[Any], Any] | None = None
        self.routed: list[tuple[str, Any]] = []

    def setup(self) -> None:
        """Instantiate a class and call its setup()."""
        self.invoker.setup()
        self.fast = self.invoker.fast_function()

    def close(self) -> None:
        self.invoker.close()

    def run_batch(
        self,
        run_id: str | None,
        items: Sequence[Any],
        progress: Any,
        flush: Callable[[list[Row]], None],
        flush_every: float,
        item_ids: Sequence[str | None] | None = None,
        attempt: int = 1,
    ) -> list[Row]:
        """Rows for `items`, in order; `progress[0]` holds the index being called (-1 after).
        `item_ids` / `attempt`: what ctx.item_id / ctx.attempt say (the daemon sends them when
        the callable takes ctx).

        Every `flush_every` seconds the rows so far go to `flush` (so a crash loses little)."""
        call = self._fast_attempt if self.fast is not None else self._attempt
        run = run_id or ""
        perf = time.perf_counter
        rows: list[Row] = []
        last_flush = perf()
        for index, item in enumerate(items):
            progress[0] = index
            rows.append(call(item, run, None if item_ids is None else item_ids[index], attempt))
            if perf() - last_flush > flush_every:
                flush(rows)
                rows = []
                last_flush = perf()
        progress[0] = -1
        return rows

    def run_fast_batch(
        self, items: Sequence[Any], progress: Any, flush: Callable[[Compact], None], flush_every: float
    ) -> Compact:
        """Like run_batch for a plain function without ctx, in the compact form (see protocol.py)."""
        fn = self.fast
        assert fn is not None
        consumer = self.kind == "consumer"
        perf = time.perf_counter
        results: list[Any] = []
        seconds: list[float] = []
        errors: dict[int, Row] = {}
        add_result = results.append
        add_seconds = seconds.append
        last_flush = previous = perf()  # one clock read per item: an item's time runs from the last one
        for index, item in enumerate(items):
            progress[0] = index
            try:
                result = fn(item)
            except (Exception, SystemExit) as exc:
                errors[len(results)] = _error_row(exc, perf() - previous)
                result = None
            now = perf()
            add_result(None if consumer else result)
            add_seconds(now - previous)
            previous = now
            if now - last_flush > flush_every:
                flush((COMPACT, results, seconds, errors, self.kind == "processor"))
                results, seconds, errors = [], [], {}
                add_result, add_seconds = results.append, seconds.append
                last_flush = now
        progress[0] = -1
        return COMPACT, results, seconds, errors, self.kind == "processor"

    def _fast_attempt(self, item: Any, run: str, item_id: str | None = None, attempt: int = 1) -> Row:
        started = time.perf_counter()
        try:
            result = self.fast(item)  # type: ignore[misc]
        except (Exception, SystemExit) as exc:
            return _error_row(exc, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        if result is None or self.kind == "consumer":
            return [], [], self.kind == "processor", None, None, seconds
        return [result], [], False, None, None, seconds

    def _attempt(self, item: Any, run: str, item_id: str | None = None, attempt: int = 1) -> Row:
        routed: list[tuple[str, Any]] = []
        self.routed = routed
        started = time.perf_counter()
        try:
            outputs, filtered = self.invoker.call_item(item, run, self._emit_to, item_id=item_id, attempt=attempt)
        except (Exception, SystemExit) as exc:
            return _error_row(exc, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        if self.kind == "consumer":
            return [], routed, False, None, None, seconds
        return outputs, routed, filtered and not routed and self.kind == "processor", None, None, seconds

    def _emit_to(self, stage: str, item: Any) -> None:
        if not is_emit_target(stage, self.targets):
            raise ValueError(f"ctx.emit_to: stage {self.stage!r} routes to unknown stage {stage!r} "
                             f"(pipeline {self.pipeline!r})")
        self.routed.append((stage, item))


def _error_row(exc: BaseException, seconds: float) -> Row:
    return [], [], False, f"{type(exc).__name__}: {exc}", traceback.format_exc(), seconds
