"""Call user code the way config.md (Callables) says — the one place that knows how.

Used by the engine's worker threads and by worker processes (`pipelined.workers`), so a stage
behaves the same wherever it runs. One `Invoker` per worker (a class is instantiated once per
worker):

    invoker = Invoker(pipeline_spec, stage_spec, load_callable(stage.call, pipeline.python_path),
                      stopping=lambda: draining)
    invoker.setup()                                      # instantiate a class, call its setup()
    outputs, filtered = invoker.call_item(item, run_id, emit_to_sink)   # processors, consumers
    for item in invoker.iterate_producer(invoker.bind_producer_args(trigger_args), run_id, sink):
        ...                                              # producers
    invoker.close()                                      # the class's close(), the owned loop

- `emit_to_sink(stage, item)` receives every `ctx.emit_to(stage, item)`; it may raise (an
  unknown stage, a full queue) and that fails the attempt.
- `call_item` returns what the item emitted, in order (return value, yielded values, and
  `ctx.emit` calls) and whether it was filtered (returned None / yielded nothing). Exceptions
  from user code propagate unchanged; retries belong to the caller.
- `async def` / async generators: `acall_item` awaits on the caller's running loop (the engine
  runs an async stage's coroutines on one loop per stage); `call_item` runs them on a loop the
  Invoker owns (worker processes).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from pipelined.calls.context import EmitToSink, StageContext
from pipelined.calls.outputs import Outputs, Spill, take
from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.errors import BadRequest

CallKind = Literal["function", "generator", "async", "asyncgen"]


def _no_stop() -> bool:
    return False


def _refuse_emit_to(stage: str, item: Any) -> None:
    raise RuntimeError(f"ctx.emit_to({stage!r}, ...) is not available here")


def call_kind(fn: Any) -> CallKind:
    """How a function (or a class's `__call__`) produces its results."""
    if inspect.isasyncgenfunction(fn):
        return "asyncgen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    if inspect.isgeneratorfunction(fn):
        return "generator"
    return "function"


class Invoker:
    """Calls one stage's callable for one worker; see the module docstring."""

    def __init__(
        self,
        pipeline: PipelineSpec,
        stage: StageSpec,
        target: Any,
        *,
        stopping: Callable[[], bool] = _no_stop,
    ) -> None:
        self.pipeline = pipeline
        self.stage = stage
        self.target = target
        self.stopping = stopping
        self.is_class = inspect.isclass(target)
        self.function: Any = target.__call__ if self.is_class else target
        self.kind: CallKind = call_kind(self.function)
        params = _parameters(self.function, drop_self=self.is_class)
        self.wants_ctx = "ctx" in params
        self._params = params
        self._instance: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._call: Callable[..., Any] | None = None
        self._args: dict[str, Any] = {} if self.is_class else dict(stage.args)

    @property
    def is_async(self) -> bool:
        return self.kind in ("async", "asyncgen")

    # -- lifecycle --------------------------------------------------------------------------
    def setup(self) -> None:
        """Instantiate a class (TOML args to `__init__`) and call its `setup()`; idempotent."""
        if self._call is not None:
            return
        if self.is_class:
            self._instance = self.target(**dict(self.stage.args))
            hook = getattr(self._instance, "setup", None)
            if callable(hook):
                self._await_if_needed(hook())
            self._call = self._instance
        else:
            self._call = self.target

    def close(self) -> None:
        """Call the instance's `close()` (if any) and close the owned event loop."""
        instance, self._instance, self._call = self._instance, None, None
        try:
            hook = getattr(instance, "close", None) if instance is not None else None
            if callable(hook):
                self._await_if_needed(hook())
        finally:
            if self._loop is not None:
                self._loop.close()
                self._loop = None

    def fast_function(self) -> Callable[[Any], Any] | None:
        """`f(item) -> result` for a plain sync function without ctx (the engine's hot path)."""
        if self.kind != "function" or self.wants_ctx or self.stage.kind == "producer":
            return None
        self.setup()
        call = self._call
        assert call is not None
        return functools.partial(call, **self._args) if self._args else call

    # -- processors and consumers -----------------------------------------------------------
    def call_item(
        self,
        item: Any,
        run_id: str,
        emit_to_sink: EmitToSink = _refuse_emit_to,
        spill: Spill | None = None,
        *,
        item_id: str | None = None,
        attempt: int = 1,
    ) -> tuple[list[Any], bool]:
        """Call with one item (synchronously); returns (outputs, filtered).

        With `spill`, an item's outputs (yielded values, ctx.emit calls) are handed to it every
        SPILL_AT as they come, so a generator yielding millions never holds more than that;
        the rest is returned. `spill` may block (back-pressure) or raise (the attempt fails)."""
        if self.is_async:
            return self._owned_loop().run_until_complete(
                self.acall_item(item, run_id, emit_to_sink, spill, item_id=item_id, attempt=attempt)
            )
        call = self._ready()
        outputs = Outputs(spill)
        kwargs = self._kwargs(run_id, outputs.append, emit_to_sink, item_id, attempt)
        result = call(item, **kwargs)
        if self.kind == "generator":
            outputs.extend(result)
        elif result is not None:
            outputs.append(result)
        return outputs.items, outputs.none()

    async def acall_item(
        self,
        item: Any,
        run_id: str,
        emit_to_sink: EmitToSink = _refuse_emit_to,
        spill: Spill | None = None,
        *,
        item_id: str | None = None,
        attempt: int = 1,
    ) -> tuple[list[Any], bool]:
        """Call with one item on the running loop (any kind); returns (outputs, filtered)."""
        call = self._ready()
        outputs = Outputs(spill)
        kwargs = self._kwargs(run_id, outputs.append, emit_to_sink, item_id, attempt)
        result = call(item, **kwargs)
        if self.kind == "asyncgen":
            async for value in result:
                outputs.append(value)
        elif self.kind == "async":
            result = await result
            if result is not None:
                outputs.append(result)
        elif self.kind == "generator":
            outputs.extend(result)
        elif result is not None:
            outputs.append(result)
        return outputs.items, outputs.none()

    # -- producers --------------------------------------------------------------------------
    def bind_producer_args(self, trigger_args: Mapping[str, Any] | None) -> dict[str, Any]:
        """The keyword arguments one run calls the producer with; BadRequest naming a bad one.

        Functions get TOML `args` overridden by the trigger's; a class's `__call__` gets only
        the trigger's (its TOML args went to `__init__`).
        """
        given = dict(trigger_args or {})
        call_args = given if self.is_class else {**self.stage.args, **given}
        where = f"pipeline {self.pipeline.name!r}, stage {self.stage.name!r} ({self.stage.call})"
        allowed = self.stage.trigger_args
        if allowed is not None and not set(given) <= set(allowed):
            refused = ", ".join(repr(k) for k in given if k not in allowed)
            may = ", ".join(repr(k) for k in allowed) if allowed else "none"
            raise BadRequest(
                f"{where}: a trigger may not set {refused}: the arguments a trigger may set"
                f" (trigger_args) are: {may}"
            )
        if "ctx" in call_args and self.wants_ctx:
            raise BadRequest(f"{where}: argument 'ctx' is reserved for the stage context")
        signature = inspect.Signature(list(self._params.values()))
        bind_args = dict(call_args)
        if self.wants_ctx:
            bind_args["ctx"] = None
        try:
            signature.bind(**bind_args)
        except TypeError as exc:
            unknown = [k for k in call_args if not _accepts(self._params, k)]
            if unknown:
                raise BadRequest(f"{where}: does not accept argument {unknown[0]!r}") from None
            raise BadRequest(f"{where}: {exc}") from None
        return call_args

    def iterate_producer(
        self,
        call_args: Mapping[str, Any],
        run_id: str,
        emit_to_sink: EmitToSink = _refuse_emit_to,
        emit_sink: Callable[[Any], None] | None = None,
        delivered: Callable[[Callable[[], None]], None] | None = None,
    ) -> Iterator[Any]:
        """Items one run produces: yielded/returned values and `ctx.emit` calls, in order.

        With `emit_sink`, `ctx.emit(item)` calls it at once instead (a producer that emits from
        a long-running plain function). `delivered` backs `ctx.on_delivered`. Closing the
        returned generator closes the user's generator (drain).
        """
        call = self._ready()
        pending: list[Any] = []
        kwargs = dict(call_args)
        if self.wants_ctx:
            kwargs["ctx"] = self._context(run_id, emit_sink or pending.append, emit_to_sink, delivered=delivered)
        if self.is_async:
            return self._iterate_async(call(**kwargs), pending)
        result = call(**kwargs)
        if not self.wants_ctx:  # nothing can be pending: the user's iterator itself (fast)
            return iter(result if result is not None else ())
        return self._iterate_sync(result, pending)

    def _iterate_sync(self, result: Any, pending: list[Any]) -> Iterator[Any]:
        iterable: Iterable[Any] = result if result is not None else ()
        try:
            for value in iterable:
                if pending:
                    yield from take(pending)
                yield value
            if pending:
                yield from take(pending)
        finally:
            close = getattr(iterable, "close", None)
            if callable(close):
                close()

    def _iterate_async(self, result: Any, pending: list[Any]) -> Iterator[Any]:
        loop = self._owned_loop()
        if self.kind == "async":
            value = loop.run_until_complete(result)
            yield from take(pending)
            yield from (value if value is not None else ())
            return
        agen: AsyncIterator[Any] = result
        try:
            while True:
                try:
                    value = loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    break
                if pending:
                    yield from take(pending)
                yield value
            if pending:
                yield from take(pending)
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not loop.is_closed():
                loop.run_until_complete(aclose())

    # -- helpers ----------------------------------------------------------------------------
    def _ready(self) -> Callable[..., Any]:
        if self._call is None:
            self.setup()
        assert self._call is not None
        return self._call

    def _kwargs(
        self,
        run_id: str,
        emit: Callable[[Any], None],
        emit_to_sink: EmitToSink,
        item_id: str | None = None,
        attempt: int = 1,
    ) -> dict[str, Any]:
        if not self.wants_ctx:
            return self._args
        return {**self._args, "ctx": self._context(run_id, emit, emit_to_sink, item_id, attempt)}

    def _context(
        self,
        run_id: str,
        emit: Callable[[Any], None],
        emit_to_sink: EmitToSink,
        item_id: str | None = None,
        attempt: int = 1,
        delivered: Callable[[Callable[[], None]], None] | None = None,
    ) -> StageContext:
        return StageContext(
            self.pipeline.name, self.stage.name, run_id, self.stopping, emit, emit_to_sink, item_id, attempt, delivered
        )

    def _owned_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _await_if_needed(self, value: Any) -> None:
        if inspect.isawaitable(value):
            self._owned_loop().run_until_complete(_await(value))


async def _await(value: Any) -> Any:
    return await value


def _parameters(fn: Any, *, drop_self: bool) -> dict[str, inspect.Parameter]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return {"args": inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                "kwargs": inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)}
    if drop_self and params:
        params = params[1:]
    return {p.name: p for p in params}


def _accepts(params: Mapping[str, inspect.Parameter], name: str) -> bool:
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    p = params.get(name)
    return p is not None and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
