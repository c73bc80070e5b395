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

Fused = Callable[[Iterator[Any], tuple[Any, ...], tuple[Any, ...], list[int], Any], None]
_generated: dict[tuple[int, bool], tuple[Fused, dict[int, int]]] = {}


def _generate(k: int, consumer: bool) -> tuple[Fused, dict[int, int]]:
    """The loop for a chain of k stages (the last a consumer or not), and line -> stage index."""
    made = _generated.get((k, consumer))
    if made is not None:
        return made
    lines = [
        "def fused(items, fns, fails, filtered, out):",
        f"    {', '.join(f'f{j}' for j in range(k))}, = fns",
        f"    {', '.join(f'failed{j}' for j in range(k))}, = fails",
        "    for v0 in items:",
    ]
    stage_of_line: dict[int, int] = {}
    for j in range(k):
        lines.append("        try:")
        stage_of_line[len(lines) + 1] = j
        lines.append(f"            v{j + 1} = f{j}(v{j})")
        lines.append("        except BaseException as exc:")  # any: the item fails, the loop goes on
        lines.append(f"            failed{j}((v{j}, exc))")
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


def release(chain: list[ThreadStage]) -> None:
    for stage in reversed(chain[1:]):
        lock = stage._exclusive
        assert lock is not None
        lock.release()


def run_fused(chain: list[ThreadStage], run: Run, items: list[Any], lineage: Lineage | None = None) -> None:
    """Process a chunk of `run` through the chain, in parts of about CALL_BUDGET_S of work."""
    per_item = sum(stage.per_item_s or 0.0 for stage in chain)
    step = len(items) if per_item <= 0 else max(1, int(CALL_BUDGET_S / per_item))
    for start in range(0, len(items), step):
        part = items[start : start + step] if step < len(items) else items
        _run_part(chain, Chunk(run, part, lineage=lineage))


def _run_part(chain: list[ThreadStage], chunk: Chunk) -> None:
    head = chain[0]
    last = chain[-1]
    run = chunk.run
    k = len(chain)
    fused, stage_of_line = _generate(k, last.is_consumer)
    inlines = [stage._inline for stage in chain]
    assert all(inline is not None for inline in inlines)
    cells = [inline[2] for inline in inlines if inline is not None]
    fns = tuple(inline[1] for inline in inlines if inline is not None)
    fails: list[list[tuple[Any, BaseException]]] = [[] for _ in range(k)]
    filtered = [0] * k
    outs: list[Any] = []
    head.hold(chunk)
    began = time.perf_counter()
    for cell in cells:
        cell.busy_since = began
    names = [stage.name for stage in chain]
    logged = enter_log_fields(_FusedLogFields(head.services.spec.name, run.id, names, fused.__code__, stage_of_line))
    try:
        fused(iter(chunk.items), fns, tuple(f.append for f in fails), filtered, outs.append)
    finally:
        exit_log_context(logged)
        took = time.perf_counter() - began
        for cell in cells:
            cell.busy_since = 0.0
    _complete(chain, cells, chunk, fails, filtered, outs, took)


def _complete(
    chain: list[ThreadStage],
    cells: list[Any],
    chunk: Chunk,
    fails: list[list[tuple[Any, BaseException]]],
    filtered: list[int],
    outs: list[Any],
    took: float,
) -> None:
    head = chain[0]
    run = chunk.run
    n = len(chunk.items)
    if not head.release(chunk):
        return  # the drain deadline took the chunk over: its results are discarded
    reached: list[int] = []
    count = n
    for j in range(len(chain)):
        reached.append(count)
        count -= len(fails[j]) + filtered[j]
    expected = sum((stage.per_item_s or 0.0) * reached[j] for j, stage in enumerate(chain))
    scale = took / expected if expected > 0 else 1.0
    for j, stage in enumerate(chain):
        cell = cells[j]
        done = reached[j] - len(fails[j])
        cell.items_in += reached[j]
        if not stage.is_consumer:
            cell.items_out += done - filtered[j]
        cell.items_failed += len(fails[j])
        estimate = stage.per_item_s or 0.0
        cell.busy_seconds += estimate * reached[j] * scale if expected > 0 else took / len(chain)
        stage.per_item_s = 0.8 * estimate + 0.2 * estimate * scale
        if head.services.spec.track_latency:
            head.services.record_latency(stage.name, chunk.enqueued_at, done)
    last = chain[-1]
    lineage = chunk.lineage
    finished = count if last.is_consumer else (last._send(run, outs, lineage) if outs else 0)
    for j, stage in enumerate(chain):
        if fails[j]:
            failures = [failure_of(item, exc) for item, exc in fails[j]]
            for failure in failures:
                if failure.error is not None and not isinstance(failure.error, Exception):
                    stage.log_base_exception(run, failure.error)
            stage._failed(Chunk(run, [f.item for f in failures], 0, lineage=lineage), failures)
    failed = sum(len(f) for f in fails)
    run.settle(leave=n - failed, finished=finished, filtered=sum(filtered), lineage=lineage)
