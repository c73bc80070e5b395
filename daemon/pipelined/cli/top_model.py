"""What `pipelined top` shows, computed from the API's JSON — no terminal, no I/O.

`TopModel` keeps the latest `GET /stats` answer (and the one before it, for rates), which
pipeline is chosen, the sort and the filter; `view()` turns them into rows:

- header: daemon address, reachable or not (and why), uptime, pipelines, items/s;
- one `PipelineRow` per pipeline: state, active runs, dead letters, items/s, bottleneck;
- one `StageRow` per stage of the chosen pipeline: state, items in/out, items/s, failed,
  dead-lettered, queue fill, busy/workers, p50/p99 (when tracked), the bottleneck marked.

Rates are counter deltas over the last RATE_WINDOW_S seconds of refreshes (a producer counts
items out, every other stage items in), so they show what happens now; with a single sample
(the first frame, `--once`) they are the API's `throughput_per_s` (60 s average). A pipeline's items/s is its busiest
stage's, the daemon's the sum of its pipelines' — the same rule as the systemd STATUS line.

A stage's state: the pipeline's own state when that is not `running`; otherwise `full` (its
queue is full: the stages before it wait), `failing` (attempts failed since the last refresh),
`busy` (a worker is inside the callable) or `idle`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

RATE_WINDOW_S = 5.0  # rates are averaged over about this long (at least one refresh)

# (key, title, numeric) for the stage table; keys `1`–`9` sort by these, in this order
STAGE_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("name", "STAGE", False),
    ("state", "STATE", False),
    ("items_in", "IN", True),
    ("items_out", "OUT", True),
    ("rate", "ITEMS/S", True),
    ("failed", "FAILED", True),
    ("dead", "DEAD", True),
    ("fill", "QUEUE", True),
    ("busy", "BUSY", True),
)
ORDER = "order"  # the pipeline's own stage order (file order): the default sort
SORT_CYCLE = (ORDER, *(key for key, _, _ in STAGE_COLUMNS))


@dataclass(frozen=True)
class StageRow:
    name: str
    kind: str
    state: str
    items_in: int
    items_out: int
    rate: float
    failed: int
    dead: int
    queue_depth: int
    queue_capacity: int
    busy: int
    workers: int
    utilization: float
    p50: float | None
    p99: float | None
    bottleneck: bool
    order: int

    @property
    def fill(self) -> float:
        """Queue fill 0..1 (producers have no queue: 0)."""
        return min(1.0, self.queue_depth / self.queue_capacity) if self.queue_capacity > 0 else 0.0


@dataclass(frozen=True)
class PipelineRow:
    name: str
    state: str
    active_runs: int
    runs_started: int
    dead: int
    rate: float
    bottleneck: str | None
    stages: int
    version: str | None


@dataclass(frozen=True)
class Header:
    address: str
    reachable: bool | None  # None: not asked yet
    problem: str | None  # why it is unreachable (or answered with an error)
    daemon_version: str | None
    uptime_s: float | None
    pipelines: int
    rate: float
    stale_s: float | None  # age of the numbers shown while unreachable
    status: int | None = None  # the HTTP status when the daemon answered with an error


@dataclass(frozen=True)
class View:
    header: Header
    pipelines: list[PipelineRow]
    chosen: PipelineRow | None
    stages: list[StageRow]
    tracks_latency: bool  # some stage of the chosen pipeline reports p50/p99
    sort: str
    descending: bool
    filter: str
    wanted: str | None = None  # `pipelined top NAME` while the daemon has no pipeline NAME


@dataclass
class _Sample:
    at: float
    stats: dict[str, Any]


@dataclass
class TopModel:
    address: str
    chosen: str | None = None
    sort: str = ORDER
    descending: bool = False
    filter: str = ""
    _history: deque[_Sample] = field(default_factory=lambda: deque(maxlen=256), repr=False)
    _reachable: bool | None = None
    _problem: str | None = None
    _status: int | None = None
    _failed_at: float | None = None
    _pinned: bool = field(default=False, repr=False)
    # rows of the latest sample, built once per refresh (a view of 200 pipelines asked for every
    # pipeline's rows three times, and `--once` builds a view per pipeline)
    _stage_cache: dict[str, list[StageRow]] = field(default_factory=dict, repr=False)
    _rows_cache: list[PipelineRow] | None = field(default=None, repr=False)

    # -- input --------------------------------------------------------------------------------
    def update(self, stats: dict[str, Any], now: float) -> None:
        """A fresh `GET /stats` answer, read at monotonic time `now`."""
        self._history.append(_Sample(now, stats))
        self._stage_cache, self._rows_cache = {}, None
        while len(self._history) > 2 and self._history[1].at <= now - RATE_WINDOW_S:
            self._history.popleft()  # keep one sample at least RATE_WINDOW_S old
        self._reachable, self._problem, self._failed_at = True, None, None
        names = self.pipeline_names()
        if not names:  # none (a restarting daemon lists none for a moment): keep the choice
            return
        if self.chosen not in names and not (self._pinned and self.chosen is not None):
            self.chosen = names[0]

    def unreachable(self, problem: str, now: float, status: int | None = None) -> None:
        """The poll failed (no answer, or an error `status`): keep the last numbers (marked stale)
        and say why."""
        if self._reachable is not False:
            self._failed_at = now
        self._reachable, self._problem, self._status = False, problem, status

    def pin(self, name: str) -> None:
        """`pipelined top NAME`: choose NAME even before (or while) the daemon does not show it."""
        self.chosen, self._pinned = name, True

    @property
    def _latest(self) -> _Sample | None:
        return self._history[-1] if self._history else None

    def _before(self) -> tuple[_Sample | None, _Sample | None]:
        """(the sample rates start from: the newest one at least RATE_WINDOW_S old, else the
        oldest; the previous refresh's), or Nones while there is only one sample."""
        if len(self._history) < 2:
            return None, None
        return self._history[0], self._history[-2]

    # -- keys ---------------------------------------------------------------------------------
    def choose(self, step: int) -> str | None:
        """Tab / arrows: the next (step 1) or previous (-1) pipeline shown."""
        names = [row.name for row in self._pipeline_rows(filtered=True)]
        if not names:
            return self.chosen
        index = names.index(self.chosen) if self.chosen in names else -step if step > 0 else 0
        self.chosen = names[(index + step) % len(names)]
        return self.chosen

    def choose_name(self, name: str) -> None:
        if name in self.pipeline_names():
            self.chosen = name

    def sort_by(self, number: int) -> None:
        """Keys 1–9: sort by that column; the same key again reverses."""
        key, _, numeric = STAGE_COLUMNS[number - 1]
        if self.sort == key:
            self.descending = not self.descending
        else:
            self.sort, self.descending = key, numeric  # big numbers first, names A→Z

    def cycle_sort(self) -> None:
        """Key s: the next sort column (after the last: the pipeline's own order again)."""
        key = SORT_CYCLE[(SORT_CYCLE.index(self.sort) + 1) % len(SORT_CYCLE)]
        numeric = next((n for k, _, n in STAGE_COLUMNS if k == key), False)
        self.sort, self.descending = key, numeric

    def set_filter(self, text: str) -> None:
        self.filter = text.strip()
        shown = [row.name for row in self._pipeline_rows(filtered=True)]
        if shown and self.chosen not in shown:
            self.chosen = shown[0]

    # -- output -------------------------------------------------------------------------------
    def pipeline_names(self) -> list[str]:
        stats = self._latest.stats if self._latest else {}
        return sorted((stats.get("pipelines") or {}).keys())

    def stage_kinds(self, pipeline: str) -> dict[str, str]:
        stats = self._latest.stats if self._latest else {}
        stages = ((stats.get("pipelines") or {}).get(pipeline) or {}).get("stages") or {}
        return {name: str(s.get("kind") or "") for name, s in stages.items()}

    def view(self, now: float) -> View:
        rows = self._pipeline_rows(filtered=True)
        chosen = next((row for row in self._pipeline_rows(filtered=False) if row.name == self.chosen), None)
        stages = self._stage_rows(self.chosen) if self.chosen else []
        tracks_latency = any(s.p50 is not None or s.p99 is not None for s in stages)
        if self.filter and chosen is not None and not _matches(self.filter, chosen.name):
            stages = [s for s in stages if _matches(self.filter, s.name)]
        return View(
            header=self._header(now),
            pipelines=rows,
            chosen=chosen,
            stages=sort_stages(stages, self.sort, self.descending),
            tracks_latency=tracks_latency,
            sort=self.sort,
            descending=self.descending,
            filter=self.filter,
            wanted=self.chosen if chosen is None and self._history else None,
        )

    def _header(self, now: float) -> Header:
        stats = self._latest.stats if self._latest else {}
        daemon = stats.get("daemon") or {}
        uptime = daemon.get("uptime_s")
        if uptime is not None and self._latest is not None and self._reachable is False:
            uptime = None  # unknown while unreachable
        rows = self._pipeline_rows(filtered=False)
        stale = now - self._latest.at if self._reachable is False and self._latest is not None else None
        return Header(
            address=self.address,
            reachable=self._reachable,
            problem=self._problem,
            daemon_version=daemon.get("version"),
            uptime_s=_number(uptime) if uptime is not None else None,
            pipelines=int(daemon.get("pipelines") or len(rows)),
            rate=sum(row.rate for row in rows),
            stale_s=stale,
            status=self._status if self._reachable is False else None,
        )

    def _pipeline_rows(self, *, filtered: bool) -> list[PipelineRow]:
        if self._rows_cache is None:
            self._rows_cache = self._build_pipeline_rows()
        if not (filtered and self.filter):
            return list(self._rows_cache)
        return [row for row in self._rows_cache if _matches(self.filter, row.name)
                or any(_matches(self.filter, s.name) for s in self._stage_rows(row.name))]  # fmt: skip

    def _build_pipeline_rows(self) -> list[PipelineRow]:
        stats = self._latest.stats if self._latest else {}
        rows = []
        for name in self.pipeline_names():
            p = stats["pipelines"][name] or {}
            stage_rows = self._stage_rows(name)
            runs = p.get("runs") or {}
            rows.append(PipelineRow(
                name=name,
                state=str(p.get("state") or "?"),
                active_runs=int(runs.get("active") or 0),
                runs_started=int(runs.get("started") or 0),
                dead=sum(s.dead for s in stage_rows),
                rate=max((s.rate for s in stage_rows), default=0.0),
                bottleneck=_text(p.get("bottleneck")),
                stages=len(stage_rows),
                version=_text(p.get("version")),
            ))  # fmt: skip
        return rows

    def _stage_rows(self, pipeline: str) -> list[StageRow]:
        if pipeline not in self._stage_cache:
            self._stage_cache[pipeline] = self._build_stage_rows(pipeline)
        return self._stage_cache[pipeline]

    def _build_stage_rows(self, pipeline: str) -> list[StageRow]:
        latest = self._latest
        if latest is None:
            return []
        p = (latest.stats.get("pipelines") or {}).get(pipeline) or {}
        start, previous = self._before()
        since = _stages_of(start, pipeline)
        last = _stages_of(previous, pipeline)
        elapsed = latest.at - start.at if start is not None else 0.0
        state = str(p.get("state") or "?")
        rows = []
        for order, (name, s) in enumerate((p.get("stages") or {}).items()):
            rows.append(_stage_row(name, s, since.get(name), last.get(name), elapsed, state,
                                   _text(p.get("bottleneck")) == name, order))  # fmt: skip
        return rows


def _stages_of(sample: _Sample | None, pipeline: str) -> dict[str, Any]:
    if sample is None:
        return {}
    p = (sample.stats.get("pipelines") or {}).get(pipeline) or {}
    return dict(p.get("stages") or {})


def _stage_row(
    name: str, s: dict[str, Any], since: dict[str, Any] | None, before: dict[str, Any] | None, elapsed: float,
    pipeline_state: str, bottleneck: bool, order: int,
) -> StageRow:  # fmt: skip
    """`since`: the stage in the sample rates start from; `before`: in the previous refresh."""
    kind = str(s.get("kind") or "")
    counted = "items_out" if kind == "producer" else "items_in"
    rate = _number(s.get("throughput_per_s"))
    if since is not None and elapsed > 0:
        delta = _int(s.get(counted)) - _int(since.get(counted))
        if delta >= 0:  # a counter that went down: the daemon restarted; keep the API's rate
            rate = delta / elapsed
    failed = _int(s.get("items_failed"))
    depth, capacity = _int(s.get("queue_depth")), _int(s.get("queue_capacity"))
    busy = _int(s.get("busy"))
    if pipeline_state != "running":
        state = pipeline_state
    elif capacity > 0 and depth >= capacity:
        state = "full"
    elif before is not None and failed > _int(before.get("items_failed")):
        state = "failing"
    elif busy > 0:
        state = "busy"
    else:
        state = "idle"
    latency = s.get("latency_ms") if isinstance(s.get("latency_ms"), dict) and kind != "producer" else None
    return StageRow(
        name=name,
        kind=kind,
        state=state,
        items_in=_int(s.get("items_in")),
        items_out=_int(s.get("items_out")),
        rate=rate,
        failed=failed,
        dead=_int(s.get("items_dead_lettered")),
        queue_depth=depth,
        queue_capacity=capacity,
        busy=busy,
        workers=_int(s.get("threads")) + _int(s.get("processes")),
        utilization=_number(s.get("utilization")),
        p50=_number(latency.get("p50")) if latency and latency.get("p50") is not None else None,
        p99=_number(latency.get("p99")) if latency and latency.get("p99") is not None else None,
        bottleneck=bottleneck,
        order=order,
    )


def sort_stages(stages: list[StageRow], key: str, descending: bool) -> list[StageRow]:
    if key == ORDER:
        return sorted(stages, key=lambda s: s.order, reverse=descending)
    return sorted(stages, key=lambda s: (getattr(s, key), -s.order if descending else s.order), reverse=descending)


def sort_title(key: str, descending: bool) -> str:
    if key == ORDER:
        return "pipeline order"
    title = next(t for k, t, _ in STAGE_COLUMNS if k == key)
    return f"{title} {'↓' if descending else '↑'}"


def _matches(text: str, value: str) -> bool:
    return text.lower() in value.lower()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _number(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
