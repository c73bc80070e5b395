"""Calling a stage's user code inside a worker process, one batch of items at a time.

`StageCallable` imports `call`, instantiates a class once (TOML `args` to `__init__`), and calls
functions, generator functions, `async def`s and async generators the way the engine does in
threads: `fn(item, **args)`, plus `ctx=` when the callable has a parameter named `ctx`. Every
attempt becomes a row `(outputs, routed, filtered, error, traceback, seconds)` — plain data that
pickles cheaply; exceptions travel as text, never as objects.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from pipelined.workers.setup import WorkerSetup, import_ref

Row = tuple[list[Any], list[tuple[str, Any]], bool, str | None, str | None, float]


class WorkerContext:
    """The `ctx` a callable receives: pipeline, stage, run, logger, stopping, emit, emit_to."""

    def __init__(self, setup: WorkerSetup, stopping: Callable[[], bool]) -> None:
        self.pipeline = setup.pipeline
        self.stage = setup.stage
        self.run: str | None = None
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"pipelined.pipeline.{setup.pipeline}"),
            {"pipeline": setup.pipeline, "stage": setup.stage},
        )
        self._stopping = stopping
        self._targets = setup.stage_names
        self.outputs: list[Any] = []
        self.routed: list[tuple[str, Any]] = []

    @property
    def stopping(self) -> bool:
        return self._stopping()

    def emit(self, item: Any) -> None:
        self.outputs.append(item)

    def emit_to(self, stage: str, item: Any) -> None:
        if stage not in self._targets:
            raise ValueError(f"ctx.emit_to: stage {self.stage!r} routes to unknown stage {stage!r} "
                             f"(pipeline {self.pipeline!r})")
        self.routed.append((stage, item))

    def bind_run(self, run: str | None) -> None:
        self.run = run
        self.logger.extra = {"pipeline": self.pipeline, "stage": self.stage, "run": run}  # type: ignore[misc]


class StageCallable:
    def __init__(self, setup: WorkerSetup, stopping: Callable[[], bool]) -> None:
        target = import_ref(setup.call, setup.python_path)
        self.kind = setup.kind
        self.instance: Any = None
        self.kwargs: dict[str, Any] = {}
        if inspect.isclass(target):
            self.instance = target(**setup.args)
            self.fn: Callable[..., Any] = self.instance
            probe: Any = self.instance.__call__
        else:
            self.fn = target
            probe = target
            self.kwargs = dict(setup.args)
        self.mode = _mode(probe)
        self.ctx = WorkerContext(setup, stopping)
        if _accepts_ctx(probe):
            self.kwargs["ctx"] = self.ctx
        self.uses_ctx = "ctx" in self.kwargs
        self._loop: asyncio.AbstractEventLoop | None = None

    def setup(self) -> None:
        method = getattr(self.instance, "setup", None)
        if callable(method):
            method()

    def close(self) -> None:
        method = getattr(self.instance, "close", None)
        try:
            if callable(method):
                method()
        finally:
            if self._loop is not None:
                self._loop.close()

    def run_batch(
        self,
        run_id: str | None,
        items: Sequence[Any],
        progress: Any,
        flush: Callable[[list[Row]], None],
        flush_every: float,
    ) -> list[Row]:
        """Rows for `items`, in order; `progress[0]` holds the index being called (-1 after).

        Every `flush_every` seconds the rows so far go to `flush` (so a crash loses little)."""
        self.ctx.bind_run(run_id)
        attempt = self.attempt
        perf = time.perf_counter
        rows: list[Row] = []
        last_flush = perf()
        for index, item in enumerate(items):
            progress[0] = index
            rows.append(attempt(item))
            if perf() - last_flush > flush_every:
                flush(rows)
                rows = []
                last_flush = perf()
        progress[0] = -1
        return rows

    def attempt(self, item: Any) -> Row:
        ctx = self.ctx
        outputs: list[Any] = []
        routed: list[tuple[str, Any]] = []
        if self.uses_ctx:
            ctx.outputs = outputs
            ctx.routed = routed
        started = time.perf_counter()
        try:
            self._call(item, outputs)
        except (Exception, SystemExit) as exc:
            seconds = time.perf_counter() - started
            return [], [], False, f"{type(exc).__name__}: {exc}", traceback.format_exc(), seconds
        seconds = time.perf_counter() - started
        filtered = self.kind == "processor" and not outputs and not routed
        return outputs, routed, filtered, None, None, seconds

    def _call(self, item: Any, outputs: list[Any]) -> None:
        mode = self.mode
        if mode == "function":
            result = self.fn(item, **self.kwargs)
            if result is not None and self.kind != "consumer":
                outputs.append(result)
        elif mode == "generator":
            for value in self.fn(item, **self.kwargs):
                outputs.append(value)
        elif mode == "async":
            result = self._event_loop().run_until_complete(self.fn(item, **self.kwargs))
            if result is not None and self.kind != "consumer":
                outputs.append(result)
        else:
            self._event_loop().run_until_complete(_collect(self.fn(item, **self.kwargs), outputs))

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop


async def _collect(agen: Any, outputs: list[Any]) -> None:
    async for value in agen:
        outputs.append(value)


def _mode(fn: Any) -> str:
    if inspect.isasyncgenfunction(fn):
        return "asyncgen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    if inspect.isgeneratorfunction(fn):
        return "generator"
    return "function"


def _accepts_ctx(fn: Any) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
