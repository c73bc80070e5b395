"""Where a stage's outputs go: a tree of targets built once from the Graph (routerbuild.py).

A `Target` takes a list of items of one run. `QueueTarget` puts them into a stage's input
queue (counting them in flight first); `Router` splits them round_robin / broadcast / weighted
(per item: the n-th item a router ever sends goes to target n mod k, whatever the chunking and
however many threads send); `ContainerTarget` counts them on a nested pipeline's stats row and
passes them on (into its entrance, or out through its exit); `Terminal` counts them finished;
a `ForwardTarget` hands them to another pipeline (a link, `pipelined.engine.links`).
`send` returns how many items ended at a terminal (the caller adds that to its run).

All or nothing. When a queue below a router may refuse (`on_full = "reject"`), a send is
planned first (`plan`: which items go to which queue), room is reserved in every refusing queue,
and only then is anything delivered — so a refusal never leaves some targets served and the
retry never duplicates items there. Injected items (`inject`) reserve room in every queue they
reach, waiting up to a deadline for `block` queues. A link cannot reserve room in another
pipeline: it takes the items or refuses them, so a planned send hands items to its links first,
once every queue's room is reserved, and delivers to the queues only when they all took theirs
(with two links or more, one may have taken its items when another refuses: those cannot be
taken back, so the send goes on — every queue gets its part — and raises `PartlySent` with what
the refusing links still owe; the sender retries only that, in place: links.py `deliver_rest`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pipelined.engine.counters import StageCounters
from pipelined.engine.lineage import Lineage
from pipelined.engine.queues import Chunk, QueueAbandoned, QueueRejected, StageQueue
from pipelined.engine.runs import Run

DropHandler = Callable[[str, list[Chunk], str], None]
Ids = Sequence[int] | None  # the items' numbers within their run (ctx.item_id), when tracked


class PartlySent(QueueRejected):
    """A planned send in which a link refused after another link had taken its items: every
    other part was delivered (`finished` of them ended at terminals or links); `rest` is what
    the refusing links did not take, each with its refusal."""

    def __init__(self, finished: int, rest: list[tuple[Target, list[Any], Ids, QueueRejected]]) -> None:
        super().__init__(str(rest[0][3]))
        self.finished = finished
        self.rest = rest


class Plan:
    """Where one send's items go: leaves (queues, terminals), counters to add, router claims."""

    __slots__ = ("parts", "counts", "claims")

    def __init__(self) -> None:
        self.parts: list[tuple[Target, list[Any], Ids]] = []
        self.counts: list[tuple[StageCounters, str, int]] = []
        self.claims: list[tuple[Router, int, int]] = []

    def rollback(self) -> None:
        """Nothing was delivered: give the routers their positions back (when nobody sent since)."""
        for router, start, n in reversed(self.claims):
            router.unclaim(start, n)

    def commit(self, run: Run, *, every_queue: bool, inline: bool = True, lineage: Lineage | None = None) -> int:
        """Deliver every part; room was reserved (`_reserve`) in every queue that refuses, or
        with `every_queue` in every queue that can run out of room. The finished count.

        Links first: one that refuses (QueueRejected) before any link took items ends the send
        with nothing delivered to any queue (their room given back); after one did, the send
        goes on and ends with `PartlySent` naming what the refusing links did not take."""
        accepted = False
        refused: dict[int, QueueRejected] = {}  # index of the part → its refusal
        for index, (leaf, items, ids) in enumerate(self.parts):
            if isinstance(leaf, ForwardTarget):
                try:
                    leaf.send(run, items, lineage, ids)
                    accepted = True
                except QueueRejected as exc:
                    if accepted:  # another link has them: no taking back
                        refused[index] = exc
                        continue
                    self._unreserve(every_queue)
                    self.rollback()
                    raise
                except BaseException:
                    self._unreserve(every_queue)
                    self.rollback()
                    raise
        for counters, name, n in self.counts:
            counters.add(name, n)
        finished = 0
        for index, (leaf, items, ids) in enumerate(self.parts):
            if isinstance(leaf, QueueTarget):
                reserved = leaf.reserves if every_queue else leaf.rejects
                leaf.deliver(run, items, reserved=reserved, inline=inline, lineage=lineage, ids=ids)
            elif index not in refused:
                finished += len(items)  # a terminal, or a link that took them above
        if refused:
            raise PartlySent(finished, [(*self.parts[index], exc) for index, exc in refused.items()])
        return finished

    def _unreserve(self, every_queue: bool) -> None:
        for leaf, items, _ in self.parts:
            if isinstance(leaf, QueueTarget) and (leaf.reserves if every_queue else leaf.rejects):
                leaf.queue.unreserve(len(items))

    def forwards(self) -> bool:
        return any(isinstance(leaf, ForwardTarget) for leaf, _, _ in self.parts)


class Target(ABC):
    rejects = False  # some queue this target reaches may refuse items (on_full = "reject")

    @abstractmethod
    def send(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> int:
        """Deliver `items` of `run` (derived from `lineage`, numbered `ids`); returns how many
        items ended here (terminal)."""

    @abstractmethod
    def plan(self, items: list[Any], plan: Plan, ids: Ids = None) -> None:
        """Add where `items` would go to `plan` (claiming router positions), delivering nothing."""

    def idle(self) -> bool:
        """True when a worker downstream waits for work (flush now rather than buffer)."""
        return True

    def may_reject(self) -> bool:
        return self.rejects


class Terminal(Target):
    def send(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> int:
        return len(items)

    def plan(self, items: list[Any], plan: Plan, ids: Ids = None) -> None:
        if items:
            plan.parts.append((self, items, ids))


class ForwardTarget(Target):
    """A leaf outside this pipeline (a link): no room to reserve, so it may refuse at delivery
    (QueueRejected); planned sends hand it its items before any queue gets theirs."""

    rejects = True

    def plan(self, items: list[Any], plan: Plan, ids: Ids = None) -> None:
        if items:
            plan.parts.append((self, items, ids))


class InlineRunner(Protocol):
    def try_inline(self, run: Run, items: list[Any], lineage: Lineage | None, ids: Ids) -> bool: ...


class QueueTarget(Target):
    """A stage's input queue — or, when the stage can take the chunk right now in the
    sender's thread (see ThreadStage.try_inline), a direct call.

    `never_block`: a `ctx.emit_to` towards a stage the sender cannot reach through the graph
    (upstream, itself, a sibling): such sends may close a cycle, and a cycle of senders each
    waiting for room in the next one's queue never moves, so they go in past a full `block`
    queue's bound (the producer is still held back by the graph's own edges)."""

    def __init__(
        self,
        queue: StageQueue,
        on_drop: DropHandler,
        runner_of: Callable[[str], Any] = lambda _: None,
        *,
        never_block: bool = False,
    ) -> None:
        self.queue = queue
        self.on_drop = on_drop
        self._runner_of = runner_of
        self._runner: InlineRunner | None | bool = False  # False: not looked up yet
        self.rejects = queue.on_full == "reject"
        self.reserves = queue.on_full != "drop_oldest"
        self._force = never_block and queue.on_full == "block"

    def _inline_runner(self) -> InlineRunner | None:
        runner = self._runner
        if runner is False:
            found = self._runner_of(self.queue.stage)
            runner = self._runner = found if hasattr(found, "try_inline") else None
        return runner  # type: ignore[return-value]

    def send(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> int:
        if items:
            self.deliver(run, items, lineage=lineage, ids=ids)
        return 0

    def plan(self, items: list[Any], plan: Plan, ids: Ids = None) -> None:
        if items:
            plan.parts.append((self, items, ids))

    def deliver(
        self,
        run: Run,
        items: list[Any],
        *,
        reserved: bool = False,
        inline: bool = True,
        lineage: Lineage | None = None,
        ids: Ids = None,
    ) -> None:
        n = len(items)
        run.settle(enter=n, lineage=lineage)
        runner = self._inline_runner() if inline else None
        if runner is not None and runner.try_inline(run, items, lineage, ids):
            if reserved:
                self.queue.unreserve(n)
            return
        chunk = Chunk(run, items, lineage=lineage, ids=ids)
        try:
            dropped = self.queue.put_reserved(chunk) if reserved else self.queue.put(chunk, force=self._force)
        except QueueRejected:
            run.settle(leave=n, lineage=lineage)
            raise
        except QueueAbandoned as exc:  # the drain deadline passed: these cannot go anywhere now
            left = n if exc.left is None else len(exc.left)  # what got in, the drain took over
            self.on_drop(self.queue.stage, [chunk.part(n - left, None)], "shutdown")
            return
        if dropped:
            self.on_drop(self.queue.stage, dropped, "dropped")

    def idle(self) -> bool:
        q = self.queue
        return q.idle_takers > q.pending_wakeups and self._inline_runner() is None


class ContainerTarget(Target):
    """A nested pipeline's entrance or exit: counted on its stats row, then passed on."""

    def __init__(self, counters: StageCounters, counter: str, inner: Target) -> None:
        self.counters = counters
        self.counter = counter
        self.inner = inner
        self.rejects = inner.rejects

    def send(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> int:
        if self.rejects:
            return send_all_or_nothing(self, run, items, lineage, ids)
        if items:
            self.counters.add(self.counter, len(items))
        return self.inner.send(run, items, lineage, ids)

    def plan(self, items: list[Any], plan: Plan, ids: Ids = None) -> None:
        if items:
            plan.counts.append((self.counters, self.counter, len(items)))
            self.inner.plan(items, plan, ids)

    def idle(self) -> bool:
        return self.inner.idle()


class Router(Target):
    def __init__(self, mode: str, targets: Sequence[Target], weights: Sequence[int] = ()) -> None:
        self.mode = mode
        self.targets = list(targets)
        self._pattern = _weighted_pattern(weights) if mode == "weighted" else []
        self._position = 0  # items sent so far (round_robin / weighted), claimed under _lock
        self._lock = threading.Lock()
        self.rejects = any(t.rejects for t in self.targets)

    def claim(self, n: int) -> int:
        """The position of the first of `n` items about to be sent (the next n are theirs)."""
        with self._lock:
            start = self._position
            self._position = start + n
            return start

    def unclaim(self, start: int, n: int) -> None:
        with self._lock:
            if self._position == start + n:
                self._position = start

    def split(self, items: Sequence[Any], start: int) -> list[Any]:
        """Each target's part when the first item has position `start` (items, or their ids)."""
        k = len(self.targets)
        if self.mode == "weighted":
            pattern = self._pattern
            size = len(pattern)
            parts: list[list[Any]] = [[] for _ in self.targets]
            for offset, item in enumerate(items):
                parts[pattern[(start + offset) % size]].append(item)
            return parts
        first = start % k  # item j goes to target (start + j) mod k
        sliced: list[Any] = [[] for _ in self.targets]
        for i in range(min(k, len(items))):
            sliced[(first + i) % k] = items[i::k]
        return sliced

    def send(self, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None) -> int:
        if not items:
            return 0
        if self.rejects:
            return send_all_or_nothing(self, run, items, lineage, ids)
        if self.mode == "broadcast":
            return sum(t.send(run, list(items), lineage, ids) for t in self.targets)
        start = self.claim(len(items))
        parts = self.split(items, start)
        id_parts = self.split(ids, start) if ids is not None else [None] * len(parts)
        return sum(
            t.send(run, part, lineage, part_ids)
            for t, part, part_ids in zip(self.targets, parts, id_parts, strict=True)
            if part
        )

    def plan(self, items: list[Any], plan: Plan, ids: Ids = None) -> None:
        if not items:
            return
        if self.mode == "broadcast":
            for t in self.targets:
                t.plan(list(items), plan, ids)
            return
        start = self.claim(len(items))
        plan.claims.append((self, start, len(items)))
        id_parts = self.split(ids, start) if ids is not None else [None] * len(self.targets)
        for t, part, part_ids in zip(self.targets, self.split(items, start), id_parts, strict=True):
            t.plan(part, plan, part_ids)

    def idle(self) -> bool:
        return any(t.idle() for t in self.targets)


def _reserve(plan: Plan, timeout: float | None) -> None:
    """Reserve room in every queue of the plan that could refuse (timeout None) or, for an
    injection, in every queue (waiting up to `timeout` for `block` ones); all or nothing."""
    done: list[tuple[StageQueue, int]] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for leaf, items, _ in plan.parts:
            if not isinstance(leaf, QueueTarget) or not leaf.reserves:
                continue
            if deadline is None and not leaf.rejects:
                continue
            left = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
            leaf.queue.reserve(len(items), left)
            done.append((leaf.queue, len(items)))
    except BaseException:
        for queue, n in done:
            queue.unreserve(n)
        plan.rollback()
        raise


def send_all_or_nothing(
    target: Target, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None
) -> int:
    """Deliver to every queue or to none (QueueRejected: nothing was delivered)."""
    plan = Plan()
    target.plan(items, plan, ids)
    _reserve(plan, None)
    return plan.commit(run, every_queue=False, lineage=lineage)


def inject(
    target: Target, run: Run, items: list[Any], timeout: float, lineage: Lineage | None = None, ids: Ids = None
) -> int:
    """Injected items: every queue they reach takes its part, or none does.

    QueueRejected when a `reject` queue has no room, TimeoutError when a `block` queue had none
    within `timeout`, QueueAbandoned when the drain deadline passed; nothing delivered then."""
    plan = Plan()
    target.plan(items, plan, ids)
    _reserve(plan, timeout)
    return plan.commit(run, every_queue=True, inline=False, lineage=lineage)


def offer(
    target: Target, run: Run, items: list[Any], lineage: Lineage | None = None, ids: Ids = None
) -> int | None:
    """Deliver only if every queue has room right now (never waits, never runs a stage
    inline); the finished count, or None when some queue had no room (nothing delivered)."""
    plan = Plan()
    target.plan(items, plan, ids)
    if plan.forwards():  # a link may wait for its pipeline: the worker sends these itself
        plan.rollback()
        return None
    try:
        _reserve(plan, 0.0)
    except (QueueRejected, QueueAbandoned, TimeoutError):
        return None
    return plan.commit(run, every_queue=True, inline=False, lineage=lineage)


def _weighted_pattern(weights: Sequence[int]) -> list[int]:
    """Smooth weighted round robin: indices in proportion to weights, evenly interleaved."""
    total = sum(weights)
    current = [0] * len(weights)
    pattern: list[int] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        pattern.append(best)
    return pattern or [0]
