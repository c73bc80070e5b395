"""`[[stage]]` tables (nested `[[stage.stage]]` at any depth) and `[hooks]` → StageSpec / Hooks.

Per-stage overrides (`queue_size`, `on_full`, `max_retries`, `retry_backoff`) are resolved here
against the enclosing values: a top-level stage inherits the pipeline's, a nested stage its
nested pipeline's (which itself inherits the pipeline's unless it overrides them).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from pipelined.config.executor import read_executor
from pipelined.config.importing import CALL_REF
from pipelined.config.lines import TablePath
from pipelined.config.rates import read_rate_keys
from pipelined.config.spec import STAGE_KINDS, Hooks, StageSpec
from pipelined.config.values import (
    Checker,
    Table,
    check_unknown_keys,
    describe,
    read_bool,
    read_choice,
    read_duration,
    read_int,
    read_str,
    read_str_list,
    read_table,
    read_weights,
)

STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
HOOK_NAMES: tuple[str, ...] = ("before_run", "after_run", "before_fork", "after_fork", "on_error")
STAGE_KEYS: tuple[str, ...] = (
    "name", "kind", "call", "args", "threads", "processes", "process_mode", "start_method",
    "max_items_per_worker", "auto_start", "trigger_args", "to", "from", "fanout", "weights", "queue_size",
    "on_full", "max_retries", "retry_backoff", "max_size", "max_wait", "mode", "max_threads",
    "max_processes", "hooks", "stage", "executor", "replicas", "ray_options", "rate_limit",
    "concurrency", "priority",
)  # fmt: skip
WORKER_KINDS: tuple[str, ...] = ("producer", "processor", "consumer")
KEY_KINDS: dict[str, tuple[str, ...]] = {
    "call": WORKER_KINDS,
    "args": WORKER_KINDS,
    "threads": WORKER_KINDS,
    "processes": WORKER_KINDS,
    "process_mode": WORKER_KINDS,
    "start_method": WORKER_KINDS,
    "max_items_per_worker": WORKER_KINDS,
    "executor": WORKER_KINDS,
    "replicas": WORKER_KINDS,
    "ray_options": WORKER_KINDS,
    "auto_start": ("producer",),
    "trigger_args": ("producer",),
    "priority": ("producer",),
    "rate_limit": ("processor", "consumer"),
    "concurrency": ("processor", "consumer"),
    "max_size": ("accumulator",),
    "max_wait": ("accumulator",),
    "mode": ("pipeline",),
    "max_threads": ("pipeline",),
    "max_processes": ("pipeline",),
    "stage": ("pipeline",),
}
PIPELINE_ONLY_HINTS: dict[str, str] = {
    key: f'"{key}" is a pipeline key: put it at the top of the file, before the first [[stage]]'
    for key in (
        "description", "enabled", "track_latency", "drain_timeout", "buffer", "buffer_sync", "python_path",
        "priority_max_wait",
    )
}
STAGE_ONLY_HINTS: dict[str, str] = {
    key: f'"{key}" is a stage key: put it inside a [[stage]]'
    for key in STAGE_KEYS
    if key
    not in ("max_threads", "max_processes", "max_retries", "retry_backoff", "queue_size", "on_full", "stage")
}
KIND_KEY_HINTS: dict[tuple[str, str], str] = {
    ("pipeline", "threads"): "; a nested pipeline's own budget is max_threads",
    ("pipeline", "processes"): "; a nested pipeline's own budget is max_processes",
    ("accumulator", "threads"): "; accumulators are built in and use no threads",
    ("accumulator", "executor"): "; accumulators are built in and always run in the daemon",
    ("producer", "rate_limit"): "; a producer is called once per run: limit the stage its items go to",
    ("producer", "concurrency"): "; a producer runs at most `threads` runs at once",
    ("accumulator", "rate_limit"): "; accumulators are built in: limit the stage their batches go to",
    ("accumulator", "concurrency"): "; accumulators are built in: limit the stage their batches go to",
    ("processor", "priority"): "; a run's priority comes from its trigger or its producer",
    ("consumer", "priority"): "; a run's priority comes from its trigger or its producer",
}
PROCESS_KEYS: tuple[str, ...] = ("process_mode", "start_method", "max_items_per_worker")
ON_FULL: tuple[str, ...] = ("block", "drop_oldest", "reject")
FANOUTS: tuple[str, ...] = ("round_robin", "broadcast", "weighted")


@dataclass(frozen=True)
class Inherited:
    """The values a stage's overrides fall back to."""

    queue_size: int = 1000
    on_full: str = "block"
    max_retries: int = 3
    retry_backoff: float = 0.1


def read_hooks(ck: Checker, owner: Table) -> Hooks:
    hooks = read_table(ck, owner, "hooks")
    if hooks is None:
        return Hooks()
    check_unknown_keys(ck, hooks, HOOK_NAMES)
    refs: dict[str, str] = {}
    for hook in HOOK_NAMES:
        ref = read_str(ck, hooks, hook)
        if ref is not None and not CALL_REF.match(ref):
            ck.report(
                hooks.at(hook), f'must be "package.module:function", got {describe(ref)}', hooks.path, hook
            )
        elif ref is not None:
            refs[hook] = ref
    return Hooks(**refs)


def _assumed_kind(value: object) -> str:
    """The kind to go on checking a stage with when its `kind` is invalid or absent."""
    close = difflib.get_close_matches(value, STAGE_KINDS, n=1, cutoff=0.6) if isinstance(value, str) else []
    return close[0] if close else "processor"


def _kinds_text(kinds: Collection[str]) -> str:
    quoted = [f'"{k}"' for k in kinds]
    return "kind = " + (quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}")


class StageReader:
    """Reads the stages of one file, keeping names unique across every nesting level."""

    def __init__(self, ck: Checker) -> None:
        self.ck = ck
        self.names: dict[str, TablePath] = {}

    def read_stages(self, parent: Table, inherited: Inherited, unnamed_prefix: str) -> tuple[StageSpec, ...]:
        raw = parent.data.get("stage")
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.ck.report(parent.at("stage"), "must be an array of tables ([[stage]])", parent.path, "stage")
            return ()
        stages = []
        for index, data in enumerate(raw):
            path = (*parent.path, "stage", index)
            stages.append(self.read_stage(data, path, f"{unnamed_prefix}stage #{index + 1}", inherited))
        return tuple(stages)

    def _read_name(self, data: dict[str, Any], path: TablePath, unnamed: str) -> str | None:
        ck = self.ck
        value = data.get("name")
        where = f"{ck.pipeline}/{unnamed}"
        if value is None:
            ck.report(where, 'missing required key "name"', path)
            return None
        if not isinstance(value, str) or not STAGE_NAME.match(value):
            shown = describe(value) if not isinstance(value, str) else f'"{value}"'
            ck.report(
                f"{where}/name",
                f'invalid stage name {shown}: use letters, digits, "_" and "-"',
                path,
                "name",
            )
            return None
        if value in self.names:
            first = ck.lines.table_line(self.names[value])
            also = f" (first defined on line {first})" if first else ""
            ck.report(f"{ck.pipeline}/{value}", f'duplicate stage name "{value}"{also}', path, "name")
            return value
        self.names[value] = path
        ck.stage_tables[value] = path
        return value

    def read_stage(
        self, data: dict[str, Any], path: TablePath, unnamed: str, inherited: Inherited
    ) -> StageSpec:
        ck = self.ck
        name = self._read_name(data, path, unnamed)
        table = Table(data, path, f"{ck.pipeline}/{name or unnamed}")
        check_unknown_keys(ck, table, STAGE_KEYS, PIPELINE_ONLY_HINTS)
        kind = read_choice(ck, table, "kind", STAGE_KINDS) or _assumed_kind(data.get("kind"))
        self._check_kind_keys(table, kind)
        spec = StageSpec(name=name or unnamed, kind=kind, line=ck.lines.table_line(path))  # type: ignore[arg-type]
        spec = self._read_overrides(table, spec, inherited)
        if kind in WORKER_KINDS:
            spec = read_executor(ck, table, self._read_worker_keys(table, spec))
            spec = read_rate_keys(ck, table, spec)
        elif kind == "accumulator":
            spec = replace(
                spec,
                max_size=read_int(ck, table, "max_size", 1) or spec.max_size,
                max_wait=read_duration(ck, table, "max_wait", positive=True),
            )
        else:
            spec = self._read_nested(table, spec)
        return self._read_routing(table, spec)

    def _check_kind_keys(self, table: Table, kind: str) -> None:
        for key, kinds in KEY_KINDS.items():
            if key in table.data and kind not in kinds:
                what = "nested stages ([[stage.stage]])" if key == "stage" else f'"{key}"'
                self.ck.report(
                    table.at(key),
                    f"{what} only appl{'y' if key == 'stage' else 'ies'} to {_kinds_text(kinds)} "
                    f'(this stage\'s kind is "{kind}"){KIND_KEY_HINTS.get((kind, key), "")}',
                    table.path,
                    key,
                )

    def _read_overrides(self, table: Table, spec: StageSpec, inherited: Inherited) -> StageSpec:
        ck = self.ck
        queue_size = read_int(ck, table, "queue_size", 1)
        on_full = read_choice(ck, table, "on_full", ON_FULL)
        max_retries = read_int(ck, table, "max_retries", 0)
        retry_backoff = read_duration(ck, table, "retry_backoff")
        return replace(
            spec,
            queue_size=inherited.queue_size if queue_size is None else queue_size,
            on_full=inherited.on_full if on_full is None else on_full,  # type: ignore[arg-type]
            max_retries=inherited.max_retries if max_retries is None else max_retries,
            retry_backoff=inherited.retry_backoff if retry_backoff is None else retry_backoff,
            hooks=read_hooks(ck, table),
        )

    def _read_worker_keys(self, table: Table, spec: StageSpec) -> StageSpec:
        ck = self.ck
        call = read_str(ck, table, "call")
        if "call" not in table.data:
            ck.report(
                table.where,
                f'missing required key "call" (a {spec.kind} needs "module:attribute")',
                table.path,
            )
        elif call is not None and not CALL_REF.match(call):
            ck.report(
                table.at("call"), f'must be "package.module:attribute", got "{call}"', table.path, "call"
            )
            call = None
        args = read_table(ck, table, "args")
        threads = read_int(ck, table, "threads", 1)
        processes = read_int(ck, table, "processes", 1)
        if "threads" in table.data and "processes" in table.data:
            ck.report(
                table.at("processes"),
                '"threads" and "processes" are exclusive: a stage runs in threads or in worker processes',
                table.path,
                "processes",
            )
            processes = None
        for key in PROCESS_KEYS:
            if key in table.data and "processes" not in table.data:
                ck.report(table.at(key), f'"{key}" only applies to stages with "processes"', table.path, key)
        process_mode = read_choice(ck, table, "process_mode", ("pool", "fork_per_item")) or "pool"
        start_method = read_choice(ck, table, "start_method", ("fork", "forkserver", "spawn"))
        if start_method is not None and process_mode == "fork_per_item":
            ck.warn(
                table.at("start_method"),
                'ignored with process_mode = "fork_per_item" (every item runs in a fresh fork)',
                table.path,
                "start_method",
            )
        max_items = read_int(ck, table, "max_items_per_worker", 0)
        auto_start = read_bool(ck, table, "auto_start")
        trigger_args = read_str_list(ck, table, "trigger_args")
        return replace(
            spec,
            call=call,
            args=dict(args.data) if args is not None else {},
            threads=threads,
            processes=processes,
            process_mode=process_mode,  # type: ignore[arg-type]
            start_method=start_method or "forkserver",  # type: ignore[arg-type]
            max_items_per_worker=max_items or 0,
            auto_start=True if auto_start is None else auto_start,
            trigger_args=trigger_args,
        )

    def _read_nested(self, table: Table, spec: StageSpec) -> StageSpec:
        ck = self.ck
        inherited = Inherited(spec.queue_size, spec.on_full, spec.max_retries, spec.retry_backoff)
        children = self.read_stages(table, inherited, f"{spec.name}/")
        if table.data.get("stage") in (None, []):
            ck.report(table.where, "a nested pipeline needs at least one [[stage.stage]]", table.path)
        return replace(
            spec,
            mode=read_choice(ck, table, "mode", ("sequential", "parallel")) or "sequential",  # type: ignore[arg-type]
            max_threads=read_int(ck, table, "max_threads", 1),
            max_processes=read_int(ck, table, "max_processes", 1),
            stages=children,
        )

    def _read_routing(self, table: Table, spec: StageSpec) -> StageSpec:
        ck = self.ck
        fanout = read_choice(ck, table, "fanout", FANOUTS)
        weights = read_weights(ck, table, "weights")
        if fanout == "weighted" and "weights" not in table.data:
            ck.report(table.at("fanout"), 'fanout = "weighted" needs "weights"', table.path, "fanout")
        if "weights" in table.data and fanout != "weighted" and "fanout" not in table.data:
            ck.report(
                table.at("weights"), '"weights" only apply with fanout = "weighted"', table.path, "weights"
            )
        elif "weights" in table.data and fanout is not None and fanout != "weighted":
            ck.report(
                table.at("weights"),
                f'"weights" only apply with fanout = "weighted" (fanout is "{fanout}")',
                table.path,
                "weights",
            )
        return replace(
            spec,
            to=read_str_list(ck, table, "to"),
            from_=read_str_list(ck, table, "from"),
            fanout=fanout,  # type: ignore[arg-type]
            weights=weights if fanout == "weighted" else None,
        )
