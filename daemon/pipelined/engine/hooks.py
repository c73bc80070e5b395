"""The pipeline's and stages' `before_run`, `after_run` and `on_error` hooks.

- `before_run(run)` / `after_run(run)`: `run` is the run's API dict (api.md Runs; state
  "running" before, the final state after). Called once per run: the pipeline's hook, then
  every stage's hook in file order. A raising before_run fails the run (its error names the
  hook); a raising after_run is logged and ignored.
- `on_error(item, error, stage)`: when an item is dead-lettered; `error` is the exception of
  its last attempt, or `ItemGivenUp("dropped" / "shutdown")`; `stage` the stage's name. The
  pipeline's hook, then the stage's; a raising on_error is logged and ignored.
- Hooks run in stage threads: whatever they raise, SystemExit and KeyboardInterrupt included,
  is caught here, so a hook can never end the thread that happened to call it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from pipelined.calls.loading import load_callable
from pipelined.config.spec import Hooks, PipelineSpec
from pipelined.engine.failurelog import FailureLog
from pipelined.errors import StartError

log = logging.getLogger("pipelined.engine")

HookFn = Callable[..., Any]


class ItemGivenUp(Exception):
    """What on_error receives for an item dropped by a full queue or left at a drain deadline."""


def error_text(exc: BaseException) -> str:
    """`TypeName: message` (just the type name when the message is empty)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


class HookSet:
    def __init__(self, spec: PipelineSpec, failure_log: FailureLog | None = None) -> None:
        self.pipeline = spec.name
        self.failure_log = failure_log  # a raising on_error is reported like a failed item
        self._before: list[tuple[str, HookFn]] = []
        self._after: list[tuple[str, HookFn]] = []
        self._on_error_pipeline: HookFn | None = None
        self._on_error_stage: dict[str, HookFn] = {}
        self._load(spec)

    def _load(self, spec: PipelineSpec) -> None:
        owners: list[tuple[str | None, Hooks]] = [(None, spec.hooks)]
        owners += [(stage.name, stage.hooks) for stage in spec.walk()]
        for owner, hooks in owners:
            where = f"pipeline {spec.name!r}" + (f", stage {owner!r}" if owner else "")
            for key in ("before_run", "after_run", "on_error"):
                ref = getattr(hooks, key)
                if not ref:
                    continue
                try:
                    fn = load_callable(ref, spec.python_path)
                except Exception as exc:
                    raise StartError(f"{where}: hooks.{key} = {ref!r}: {error_text(exc)}") from exc
                label = f"{owner or 'pipeline'} hooks.{key} ({ref})"
                if key == "before_run":
                    self._before.append((label, fn))
                elif key == "after_run":
                    self._after.append((label, fn))
                elif owner is None:
                    self._on_error_pipeline = fn
                else:
                    self._on_error_stage[owner] = fn

    @property
    def has_run_hooks(self) -> bool:
        return bool(self._before or self._after)

    def before_run(self, run: dict[str, Any]) -> str | None:
        """Call every before_run; the error text of the first that raises (the run fails)."""
        for label, fn in self._before:
            try:
                fn(run)
            except BaseException as exc:  # SystemExit too: a hook never ends the thread running it
                log.exception("%s raised; run %s fails", label, run["run"], extra=self._extra(run))
                return f"{label} failed: {error_text(exc)}"
        return None

    def after_run(self, run: dict[str, Any]) -> None:
        for label, fn in self._after:
            try:
                fn(run)
            except BaseException:
                log.exception("%s raised (ignored)", label, extra=self._extra(run))

    def on_error(self, stage: str, run_id: str, item: Any, error: BaseException) -> None:
        for fn in (self._on_error_pipeline, self._on_error_stage.get(stage)):
            if fn is None:
                continue
            try:
                fn(item, error, stage)
            except BaseException as exc:
                if self.failure_log is None:
                    log.exception("on_error hook raised (ignored)",
                                  extra={"pipeline": self.pipeline, "stage": stage, "run": run_id})  # fmt: skip
                    continue
                self.failure_log.failed(
                    stage, run_id, error_text(exc), partial(_formatted, exc),
                    headline="on_error hook raised (ignored)", gave_up=False, kind=f"on_error hook {type(exc).__name__}",
                )  # fmt: skip

    @property
    def has_on_error(self) -> bool:
        return self._on_error_pipeline is not None or bool(self._on_error_stage)

    def _extra(self, run: dict[str, Any]) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "stage": run.get("stage"), "run": run.get("run")}
