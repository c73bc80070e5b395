"""Fused inline chains: consecutive fast one-thread stages called item by item in one loop.

When a sender runs a fast stage inline (ThreadStage.try_inline) and that stage's only
downstream is another such stage (and so on), the whole chain runs as one generated Python
loop — `v1 = f0(v0); if v1 is None: ...; v2 = f1(v1); ...` — instead of one `map()` and one
list per stage. Calls are Python-to-Python (the interpreter's cheapest), a filtered item costs
an `is None`, and per-chunk work (locks, counters, run accounting) happens once per chain.

What stays exactly as without fusion: each stage's counters (items in/out/failed), the run's
counts, filtered items, failures (each retried at the stage where it failed, then dead-lettered
there), the drain deadline (the chunk is held by the chain's first stage), the order of
outputs, and the log fields of user code (`stage` is the stage whose call is running, read from
the loop's frame only when a record is logged). Estimates: a chain's measured time is shared
among its stages in proportion to their per-item averages (busy time, utilization, and the
averages themselves, so a stage that turns slow ends the fusion as it would end inlining).

A stage joins a chain only while: one thread, a plain function without ctx (no per-item
routing), its calls average under INLINE_MAX_S, its worker is alive, its queue is open, empty
and not held back by retries, and its sender reaches it through a plain queue (no router). A
run with tracing on, and retries, take the ordinary path.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import Chunk
from pipelined.engine.router import QueueTarget, Target
from pipelined.engine.runs import Run
from pipelined.engine.stage import Failure, StageServices, failure_of
from pipelined.logcontext import enter_log_fields, exit_log_context


class ThreadStage(Protocol):
    """What a chain needs of a stage (engine/threads.py's ThreadStage)."""

    name: str
    is_consumer: bool
    target: Target
    services: StageServices
    per_item_s: float | None
    fusible: bool
    fused_plan: Any  # its chain's _Plan while it heads one (None when its worker is gone)
    _exclusive: threading.Lock | None
    _inline: Any  # (invoker, fast function, counter cell, InProgress) while its worker runs

    def fast_now(self) -> bool: ...

    def ready_to_fuse(self) -> bool: ...

    def hold(self, chunk: Chunk) -> None: ...

    def release(self, chunk: Chunk) -> bool: ...

    def _send(self, run: Run, outputs: list[Any], lineage: Lineage | None = None, ids: list[int] | None = None) -> int: ...

    def _failed(self, chunk: Chunk, failures: list[Failure]) -> None: ...

    def log_base_exception(self, run: Run, exc: BaseException) -> None: ...

MAX_CHAIN = 8
CALL_BUDGET_S = 0.01  # a fused chunk is cut into parts of about this much work (outputs flow on)

Fused = Callable[[list[Any], tuple[Any, ...], Any, list[int], Any], None]
_generated: dict[tuple[int, bool], tuple[Fused, dict[int, int]]] = {}


def _generate(k: int, consumer: bool) -> tuple[Fused, dict[int, int]]:
    """The loop for a chain of k stages (the last a consumer or not), and line -> stage index.

    A failed item is reported as `fail((j, value, exc))`, j the index of the stage that raised."""
    made = _generated.get((k, consumer))
    if made is not None:
        return made
    lines = [
        "def fused(items, fns, fail, filtered, out):",
        f"    {', '.join(f'f{j}' for j in range(k))}, = fns",
        "    for v0 in items:",
    ]
    stage_of_line: dict[int, int] = {}
    for j in range(k):
        lines.append("        try:")
        stage_of_line[len(lines) + 1] = j
        lines.append(f"            v{j + 1} = f{j}(v{j})")
        lines.append("        except BaseException as exc:")  # any: the item fails, the loop goes on
        lines.append(f"            fail(({j}, v{j}, exc))")
        lines.append("            continue")
        if j < k - 1 or not consumer:
            lines.append(f"        if v{j + 1} is None:")
            lines.append(f"            filtered[{j}] += 1")
            lines.append("            continue")
    if not consumer:
        lines.append(f"        out(v{k})")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines) + "\n", "<pipelined fused chain>", "exec"), namespace)  # noqa: S102
    made = (namespace["fused"], stage_of_line)
    _generated[(k, consumer)] = made
    return made


class _FusedLogFields(Mapping[str, "str | None"]):
    """Log fields while a chain runs: `stage` is the stage whose call is on the stack."""

    def __init__(self, pipeline: str, run: str, names: list[str], code: Any, stage_of_line: dict[int, int]) -> None:
        self._fields = {"pipeline": pipeline, "run": run}
        self._names = names
        self._code = code
        self._stage_of_line = stage_of_line

    def _stage(self) -> str:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code is self._code:
                return self._names[self._stage_of_line.get(frame.f_lineno, 0)]
            frame = frame.f_back  # type: ignore[assignment]
        return self._names[0]

    def __getitem__(self, key: str) -> str | None:
        return self._stage() if key == "stage" else self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("pipeline", "stage", "run"))

    def __len__(self) -> int:
        return 3


def chain_from(head: ThreadStage) -> list[ThreadStage]:
    """The stages `head` can run fused right now (head first); fewer than 2: no fusion.

    Called with head's exclusive lock held; takes the others' exclusive locks (in the graph's
    order, like any inline sender) and keeps them for the caller, who releases them (`release`)."""
    chain = [head]
    stage = head
    while len(chain) < MAX_CHAIN and not stage.is_consumer:
        target = stage.target
        if not isinstance(target, QueueTarget):
            break
        nxt: Any = target._inline_runner()
        if nxt is None or not getattr(nxt, "fusible", False) or nxt in chain or not nxt.fast_now():
            break
        lock = nxt._exclusive
        assert lock is not None
        if not lock.acquire(blocking=False):
            break  # its worker is busy with a chunk: the ordinary path waits for it
        if not nxt.ready_to_fuse():
            lock.release()
            break
        chain.append(nxt)
        stage = nxt
    return chain


def runs_inline(target: Target, n: int) -> bool:
    """A chunk of `n` items sent to `target` now would be called in the sender's thread (a fast
    one-thread stage, alone or heading a chain) within about CALL_BUDGET_S; the producer then
    pulls larger slices."""
    if not isinstance(target, QueueTarget):
        return False
    runner: Any = target._inline_runner()
    if runner is None or not getattr(runner, "fusible", False) or not runner.fast_now():
        return False
    per_item = runner.per_item_s
    return per_item is not None and per_item * n <= CALL_BUDGET_S


def release(chain: list[ThreadStage]) -> None:
    for stage in reversed(chain[1:]):
        lock = stage._exclusive
        assert lock is not None
        lock.release()


class _Plan:
    """What a chain's parts share while its stages' workers stay the same: the generated loop,
    the functions, counter cells and names (built once, not per chunk)."""

    __slots__ = ("inlines", "fused", "stage_of_line", "fns", "cells", "names", "pipeline", "latency", "run_id",
                 "fields")

    def __init__(self, chain: list[ThreadStage], inlines: list[Any]) -> None:
        self.inlines = inlines
        self.fused, self.stage_of_line = _generate(len(chain), chain[-1].is_consumer)
        self.fns = tuple(inline[1] for inline in inlines)
        self.cells = [inline[2] for inline in inlines]
        self.names = [stage.name for stage in chain]
        spec = chain[0].services.spec
        self.pipeline = spec.name
        self.latency = spec.track_latency
        self.run_id = ""
        self.fields: _FusedLogFields | None = None

    def log_fields(self, run_id: str) -> _FusedLogFields:
        """The log fields for a part of run `run_id` (made once per run)."""
        fields = self.fields
        if fields is None or self.run_id != run_id:
            fields = self.fields = _FusedLogFields(
                self.pipeline, run_id, self.names, self.fused.__code__, self.stage_of_line
            )
            self.run_id = run_id
        return fields


def _plan_of(chain: list[ThreadStage]) -> _Plan:
    """The head's plan for this chain (kept on the head, used under its lock), rebuilt when the
    chain or one of its stages' workers changed."""
    head = chain[0]
    inlines = [stage._inline for stage in chain]
    plan: _Plan | None = head.fused_plan
    if plan is None or plan.inlines != inlines:  # identity first: the same workers' tuples
        assert all(inline is not None and inline[1] is not None for inline in inlines)
        plan = head.fused_plan = _Plan(chain, inlines)
    return plan


def run_fused(chain: list[ThreadStage], run: Run, items: list[Any], lineage: Lineage | None = None) -> None:
    """Process a chunk of `run` through the chain, in parts of about CALL_BUDGET_S of work."""
    per_item = 0.0
    for stage in chain:
        per_item += stage.per_item_s or 0.0
    n = len(items)
    step = n if per_item <= 0 else max(1, int(CALL_BUDGET_S / per_item))
    if step >= n:
        _run_part(chain, Chunk(run, items, lineage=lineage))
        return
    for start in range(0, n, step):
        _run_part(chain, Chunk(run, items[start : start + step], lineage=lineage))


def _run_part(chain: list[ThreadStage], chunk: Chunk) -> None:
    plan = _plan_of(chain)
    head = chain[0]
    run = chunk.run
    cells = plan.cells
    fails: list[tuple[int, Any, BaseException]] = []
    filtered = [0] * len(chain)
    outs: list[Any] = []
    head.hold(chunk)
    began = time.perf_counter()
    for cell in cells:
        cell.busy_since = began
    logged = enter_log_fields(plan.log_fields(run.id))
    try:
        plan.fused(chunk.items, plan.fns, fails.append, filtered, outs.append)
    finally:
        exit_log_context(logged)
        took = time.perf_counter() - began
        for cell in cells:
            cell.busy_since = 0.0
    _complete(chain, plan, chunk, fails, filtered, outs, took)


def _complete(
    chain: list[ThreadStage],
    plan: _Plan,
    chunk: Chunk,
    fails: list[tuple[int, Any, BaseException]],
    filtered: list[int],
    outs: list[Any],
    took: float,
) -> None:
    head = chain[0]
    run = chunk.run
    n = len(chunk.items)
    if not head.release(chunk):
        return  # the drain deadline took the chunk over: its results are discarded
    k = len(chain)
    cells = plan.cells
    if not fails and not any(filtered):  # every stage called with every item (the usual case)
        expected = 0.0
        for stage in chain:
            expected += stage.per_item_s or 0.0
        expected *= n
        scale = took / expected if expected > 0 else 1.0
        for j in range(k):
            stage = chain[j]
            cell = cells[j]
            cell.items_in += n
            if not stage.is_consumer:
                cell.items_out += n
            estimate = stage.per_item_s or 0.0
            cell.busy_seconds += estimate * n * scale if expected > 0 else took / k
            stage.per_item_s = 0.8 * estimate + 0.2 * estimate * scale
        count = n
        done = [n] * k if plan.latency else []
    else:
        count, done = _count(chain, cells, n, fails, filtered, took)
    if plan.latency:
        record = head.services.record_latency
        for j, stage in enumerate(chain):
            record(stage.name, chunk.enqueued_at, done[j])
    last = chain[-1]
    lineage = chunk.lineage
    finished = count if last.is_consumer else (last._send(run, outs, lineage) if outs else 0)
    if fails:
        _fail(chain, chunk, fails)
    run.settle(leave=n - len(fails), finished=finished, filtered=sum(filtered), lineage=lineage)


def _count(
    chain: list[ThreadStage],
    cells: list[Any],
    n: int,
    fails: list[tuple[int, Any, BaseException]],
    filtered: list[int],
    took: float,
) -> tuple[int, list[int]]:
    """Counters and estimates of a part in which items failed or were filtered: (items that came
    out of the last stage, items each stage completed)."""
    k = len(chain)
    failed_at = [0] * k
    for j, _, _ in fails:
        failed_at[j] += 1
    reached: list[int] = []  # items each stage was called with
    count = n
    expected = 0.0
    for j in range(k):
        reached.append(count)
        expected += (chain[j].per_item_s or 0.0) * count
        count -= failed_at[j] + filtered[j]
    scale = took / expected if expected > 0 else 1.0
    done: list[int] = []
    for j in range(k):
        stage = chain[j]
        cell = cells[j]
        called = reached[j]
        done.append(called - failed_at[j])
        cell.items_in += called
        if not stage.is_consumer:
            cell.items_out += done[j] - filtered[j]
        cell.items_failed += failed_at[j]
        estimate = stage.per_item_s or 0.0
        cell.busy_seconds += estimate * called * scale if expected > 0 else took / k
        stage.per_item_s = 0.8 * estimate + 0.2 * estimate * scale
    return count, done


def _fail(chain: list[ThreadStage], chunk: Chunk, fails: list[tuple[int, Any, BaseException]]) -> None:
    """Each failed item retried or dead-lettered at the stage where it failed (in stage order)."""
    run = chunk.run
    for j, stage in enumerate(chain):
        failures = [failure_of(item, exc) for at, item, exc in fails if at == j]
        if not failures:
            continue
        for failure in failures:
            if failure.error is not None and not isinstance(failure.error, Exception):
                stage.log_base_exception(run, failure.error)
        stage._failed(Chunk(run, [f.item for f in failures], 0, lineage=chunk.lineage), failures)
