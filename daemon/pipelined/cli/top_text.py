"""`pipelined top` as text: the cells both the live view and `--once` show, the columns that fit
a terminal's width, the graph view's drawing, and the whole `--once` printout.

The live view (Textual) uses Unicode glyphs (★, █░) and short numbers (1.2k); `--once` is plain
ASCII (`*` marks the bottleneck) with exact counts, rates with one decimal and queues as
depth/capacity, so a script can split its lines on whitespace whatever the locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len

from pipelined.cli.top_model import ORDER, STAGE_COLUMNS, Header, PipelineRow, StageRow, View, sort_title

BAR_CELLS = 5
NAME_WIDTH = 18  # pipeline and stage names are cut to this in tables


@dataclass(frozen=True)
class Glyphs:
    bottleneck: str
    not_bottleneck: str
    full: str
    empty: str
    sep: str
    ok: str
    down: str
    arrow: str


UNICODE = Glyphs("★ ", "  ", "█", "░", " · ", "●", "✖", "─▶")
ASCII = Glyphs("*", " ", "#", ".", ", ", "ok", "DOWN", "->")  # --once: QUEUE shows depth/capacity


# -- numbers ----------------------------------------------------------------------------------
def human(value: float) -> str:
    """1234 → '1.2k', 3_400_000 → '3.4M', 12.34 → '12', 0.5 → '0.5'."""
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    if value == int(value) or abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"


def exact(value: float) -> str:
    """`--once`: counts in full (1234), rates with one decimal (80.0) — for scripts."""
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def duration(seconds: float | None) -> str:
    """12.5 → '12s', 754 → '12m34s', 7300 → '2h01m', 200000 → '2d07h'."""
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.1f}s"
    return f"{ms:.0f}ms" if ms >= 10 else f"{ms:.1f}ms"


def bar(fill: float, width: int, glyphs: Glyphs) -> str:
    """A queue-fill bar of `width` cells (any fill above zero shows at least one cell)."""
    cells = min(width, round(fill * width))
    if fill > 0 and cells == 0:
        cells = 1
    return glyphs.full * cells + glyphs.empty * (width - cells)


def fill_level(fill: float) -> str:
    """NiFi's colours: 'ok' under 60 %, 'warn' under 85 %, 'high' from 85 %."""
    return "high" if fill >= 0.85 else "warn" if fill >= 0.60 else "ok"


def cut(name: str, width: int = NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "~"


# -- header and rows --------------------------------------------------------------------------
def header_line(h: Header, interval: float | None, glyphs: Glyphs = UNICODE) -> str:
    """`● reachable http://127.0.0.1:8470 · up 2m03s · 6 pipelines · 12 items/s` (fits 80 columns
    for a TCP address), or `✖ UNREACHABLE ... · retrying every 1s · numbers from 12s ago` (or
    `✖ REFUSED (401) ...` / `✖ ERROR (500) ...` when the daemon answered with an error)."""
    if h.reachable is None:
        return f"connecting to {h.address}"
    if not h.reachable:
        if h.status is None:
            what = "UNREACHABLE"
        else:  # it answered: a 401 after a restart with another token, a 500, not a daemon
            what = f"{'REFUSED' if h.status in (401, 403) else 'ERROR'} ({h.status})"
        parts = [f"{glyphs.down} {what} {h.address}"]
        parts.append(f"retrying every {interval:g}s" if interval else "retrying")
        if h.stale_s is not None:
            parts.append(f"numbers from {duration(h.stale_s)} ago")
        return glyphs.sep.join(parts)
    plural = "s" if h.pipelines != 1 else ""
    return glyphs.sep.join([f"{glyphs.ok} reachable {h.address}", f"up {duration(h.uptime_s)}",
                            f"{h.pipelines} pipeline{plural}", f"{human(h.rate)} items/s"])  # fmt: skip


PIPELINE_TITLES = ("PIPELINE", "STATE", "RUNS", "DEAD", "ITEMS/S", "STAGES", "BOTTLENECK")
PIPELINE_NUMERIC = (False, False, True, True, True, True, False)
PIPELINE_COLUMNS = [(title, title, numeric) for title, numeric in zip(PIPELINE_TITLES, PIPELINE_NUMERIC, strict=True)]
PIPELINE_DROP_ORDER = ("STAGES", "RUNS", "DEAD", "BOTTLENECK")  # dropped first when a terminal is too narrow


def pipeline_cells(row: PipelineRow, glyphs: Glyphs = UNICODE) -> list[str]:
    number = human if glyphs is UNICODE else exact
    return [cut(row.name), row.state, str(row.active_runs), number(row.dead), number(row.rate),
            str(row.stages), cut(row.bottleneck) if row.bottleneck else "-"]  # fmt: skip


LATENCY_COLUMNS = (("p50", "P50", True), ("p99", "P99", True))
DROP_ORDER = ("items_out", "busy", "dead", "state")  # dropped first when a terminal is too narrow


def stage_columns(tracks_latency: bool) -> list[tuple[str, str, bool]]:
    """(key, title, numeric) of the stage table: the 9 sortable ones, then P50/P99 when tracked."""
    return [*STAGE_COLUMNS, *(LATENCY_COLUMNS if tracks_latency else ())]


def stage_cells(row: StageRow, keys: Sequence[str], glyphs: Glyphs = UNICODE) -> list[str]:
    return [stage_cell(row, key, glyphs) for key in keys]


def stage_cell(row: StageRow, key: str, glyphs: Glyphs = UNICODE) -> str:
    if key == "name":
        return (glyphs.bottleneck if row.bottleneck else glyphs.not_bottleneck) + cut(row.name)
    if key == "fill" and glyphs is ASCII:
        return f"{row.queue_depth}/{row.queue_capacity}" if row.queue_capacity > 0 else "-"
    if key == "state":
        return row.state
    if key == "fill":
        if row.queue_capacity <= 0:
            return "-"
        return f"{bar(row.fill, BAR_CELLS, glyphs)} {human(row.queue_depth)}"
    if key == "busy":
        return f"{row.busy}/{row.workers}"
    if key in ("p50", "p99"):
        return latency(getattr(row, key))
    return (human if glyphs is UNICODE else exact)(getattr(row, key))


def fit_columns(
    columns: list[tuple[str, str, bool]], rows: Sequence[Sequence[str]], width: int | None,
    drop: Sequence[str] = DROP_ORDER,
) -> list[int]:  # fmt: skip
    """Indexes of the columns to show so the table (1 space between columns) fits `width`
    terminal cells: columns are dropped in `drop` order, then from the right, until it does (the
    first, the name, stays)."""
    keep = list(range(len(columns)))
    if width is None:
        return keep
    widths = [max([cell_len(title), *(cell_len(r[i]) for r in rows)]) + 1 for i, (_, title, _) in enumerate(columns)]
    order = [i for key in drop for i, c in enumerate(columns) if c[0] == key]
    order += [i for i in reversed(range(1, len(columns))) if i not in order]
    for index in order:
        if sum(widths[i] for i in keep) <= width:
            break
        keep.remove(index)
    return keep


def summary_line(view: View, error: str | None = None, glyphs: Glyphs = UNICODE) -> str:
    """The line above the stage table: the chosen pipeline, its runs, sort and filter."""
    chosen = view.chosen
    if chosen is None:
        if view.filter:
            return f"no pipeline matches filter {view.filter!r}"
        if view.wanted is not None and view.pipelines:
            return f"no pipeline named {view.wanted!r} (yet; it is chosen when it appears): Tab chooses another"
        return "no pipeline loaded"
    parts = [f"{chosen.name}: {chosen.state}", f"runs: {chosen.active_runs} active, {chosen.runs_started} started"]
    if chosen.bottleneck:
        parts.append(f"bottleneck {chosen.bottleneck}")
    if view.sort != ORDER:  # the default, pipeline order, goes without saying
        order = sort_title(view.sort, view.descending)
        parts.append(f"sort: {order.replace('↓', '(desc)').replace('↑', '(asc)') if glyphs is ASCII else order}")
    if view.filter:
        parts.append(f"filter {view.filter!r}")
    line = glyphs.sep.join(parts)
    return f"{line}{glyphs.sep}error: {error}" if error else line


# -- graph view -------------------------------------------------------------------------------
def graph_lines(graph: dict[str, Any], stages: Sequence[StageRow], glyphs: Glyphs = UNICODE) -> list[str]:
    """The pipeline's graph as text, one line per stage in layers (longest path from a source),
    each with its live numbers, then one line per edge leaving it (route named unless direct)."""
    rows = {s.name: s for s in stages}
    lines: list[str] = []
    _draw(graph, rows, glyphs, "", lines)
    return lines or ["(no stages)"]


def _draw(graph: dict[str, Any], rows: dict[str, StageRow], glyphs: Glyphs, indent: str, lines: list[str]) -> None:
    nodes = {str(n.get("id")): n for n in graph.get("nodes") or []}
    edges = [(str(e.get("from")), str(e.get("to")), str(e.get("route") or "direct")) for e in graph.get("edges") or []]
    depth = _layers(list(nodes), edges)
    for name in sorted(nodes, key=lambda n: (depth[n], list(nodes).index(n))):
        node = nodes[name]
        lines.append(f"{indent}[{depth[name] + 1}] {_node_text(name, node, rows.get(name), glyphs)}")
        children = node.get("children")
        if isinstance(children, dict):
            _draw(children, rows, glyphs, indent + "      ", lines)
        for src, dst, route in edges:
            if src == name:
                how = "" if route == "direct" else f"  ({route})"
                lines.append(f"{indent}      {glyphs.arrow} {dst}{how}")


def _node_text(name: str, node: dict[str, Any], row: StageRow | None, glyphs: Glyphs) -> str:
    """`★ enrich (processor)  busy  12/s  q ██░░░ 312/1000  4/4 busy  3 failed  1 dead`."""
    text = f"{name} ({node.get('kind')})"
    if row is None:
        return text
    mark = glyphs.bottleneck.strip() + " " if row.bottleneck else ""
    parts = [mark + text, row.state, f"{human(row.rate)}/s"]
    if row.queue_capacity > 0:
        parts.append(f"q {bar(row.fill, BAR_CELLS, glyphs)} {row.queue_depth}/{row.queue_capacity}")
    if row.workers:
        parts.append(f"{row.busy}/{row.workers} busy")
    if row.failed:
        parts.append(f"{human(row.failed)} failed")
    if row.dead:
        parts.append(f"{human(row.dead)} dead")
    return "  ".join(parts)


def _layers(names: list[str], edges: list[tuple[str, str, str]]) -> dict[str, int]:
    """Longest path from a node without inputs (cycles, which routing forbids, stop at 0)."""
    depth = dict.fromkeys(names, 0)
    for _ in range(len(names)):
        changed = False
        for src, dst, _route in edges:
            if src in depth and dst in depth and depth[dst] < depth[src] + 1 <= len(names):
                depth[dst] = depth[src] + 1
                changed = True
        if not changed:
            break
    return depth


# -- --once -----------------------------------------------------------------------------------
def once_text(views: Sequence[View], interval: float | None = None) -> str:
    """Header, the pipelines table, then each view's chosen pipeline with its stage table."""
    from pipelined.cli.client import format_table

    if not views:
        return ""
    first = views[0]
    out = [header_line(first.header, interval, ASCII), ""]
    if first.pipelines:
        out.append(format_table(PIPELINE_TITLES, [pipeline_cells(p, ASCII) for p in first.pipelines]))
    else:
        out.append("no pipelines loaded")
    for view in views:
        if view.chosen is None:
            continue
        columns = stage_columns(view.tracks_latency)
        keys = [key for key, _, _ in columns]
        out += ["", summary_line(view, glyphs=ASCII)]
        rows = [stage_cells(s, keys, ASCII) for s in view.stages]
        out.append(format_table([title for _, title, _ in columns], rows) if rows else "(no stages)")
    return "\n".join(out) + "\n"
