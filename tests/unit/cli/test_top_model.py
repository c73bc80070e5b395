"""`pipelined top`'s data model and text: API JSON → rows, rates, states, sorting, filtering,
the columns that fit a width, the graph drawing, `--once` text and the trigger dialog's body."""

from __future__ import annotations

import pytest
from top_fakes import ADDRESS, ORDERS_GRAPH, pipeline_doc, stage, stats_doc

from pipelined.cli.top_dialogs import trigger_request
from pipelined.cli.top_model import RATE_WINDOW_S, TopModel
from pipelined.cli.top_text import (
    ASCII,
    UNICODE,
    bar,
    duration,
    fit_columns,
    graph_lines,
    header_line,
    human,
    once_text,
    stage_cell,
    stage_columns,
)


def model(doc: dict | None = None, now: float = 100.0) -> TopModel:
    m = TopModel(ADDRESS)
    m.update(doc or stats_doc(), now)
    return m


def test_rows_from_one_stats_document() -> None:
    view = model().view(100.0)
    assert [p.name for p in view.pipelines] == ["audit", "orders"]
    assert view.chosen is not None and view.chosen.name == "audit"  # the first by name
    orders = next(p for p in view.pipelines if p.name == "orders")
    assert (orders.state, orders.active_runs, orders.runs_started, orders.dead, orders.bottleneck) == (
        "running", 1, 3, 2, "enrich")
    assert orders.rate == 80.0  # its busiest stage (one sample: the API's 60 s rate)
    h = view.header
    assert (h.reachable, h.pipelines, h.uptime_s, h.rate, h.daemon_version) == (True, 2, 3725.0, 80.5, "0.1.0")


def test_stage_rows_of_the_chosen_pipeline() -> None:
    m = model()
    m.choose_name("orders")
    stages = m.view(100.0).stages
    assert [s.name for s in stages] == ["read", "enrich", "store"]  # pipeline order
    enrich = stages[1]
    assert enrich.bottleneck and not stages[0].bottleneck
    assert (enrich.items_in, enrich.items_out, enrich.failed, enrich.dead) == (1000, 998, 9, 2)
    assert (enrich.busy, enrich.workers, enrich.fill, enrich.state) == (3, 4, 0.5, "busy")
    assert stages[0].fill == 0.0 and stages[0].queue_capacity == 0  # a producer has no queue
    assert stages[2].state == "idle"


def test_rates_are_counter_deltas_over_the_window() -> None:
    doc = stats_doc()
    m = model(doc, now=100.0)
    m.choose_name("orders")
    later = stats_doc()
    later["pipelines"]["orders"]["stages"]["enrich"]["items_in"] = 1000 + 300
    later["pipelines"]["orders"]["stages"]["read"]["items_out"] = 1000 + 500
    m.update(later, 102.0)
    rows = {s.name: s for s in m.view(102.0).stages}
    assert rows["enrich"].rate == 150.0  # items in per second
    assert rows["read"].rate == 250.0  # a producer: items out per second
    assert rows["store"].rate == 0.0  # nothing moved
    # samples older than the window are dropped, one kept at its edge
    for t in range(3, 20):
        m.update(later, 100.0 + t)
    assert m._history[0].at >= 119.0 - RATE_WINDOW_S - 1  # noqa: SLF001


def test_a_counter_that_went_down_keeps_the_api_rate() -> None:
    m = model(now=100.0)
    m.choose_name("orders")
    restarted = stats_doc()
    restarted["pipelines"]["orders"]["stages"]["enrich"]["items_in"] = 3
    m.update(restarted, 101.0)
    assert next(s for s in m.view(101.0).stages if s.name == "enrich").rate == 80.0


@pytest.mark.parametrize(
    ("change", "state"),
    [
        ({"queue_depth": 1000}, "full"),
        ({"items_failed": 20}, "failing"),
        ({"busy": 0}, "idle"),
        ({}, "busy"),
    ],
)
def test_stage_state(change: dict, state: str) -> None:
    m = model(now=100.0)
    m.choose_name("orders")
    doc = stats_doc()
    doc["pipelines"]["orders"]["stages"]["enrich"].update(change)
    m.update(doc, 101.0)
    assert next(s for s in m.view(101.0).stages if s.name == "enrich").state == state


def test_a_pipeline_that_is_not_running_gives_its_state_to_every_stage() -> None:
    doc = stats_doc()
    doc["pipelines"]["orders"]["state"] = "draining"
    m = model(doc)
    m.choose_name("orders")
    assert {s.state for s in m.view(100.0).stages} == {"draining"}


def test_choose_wraps_and_keeps_a_pinned_pipeline() -> None:
    m = model()
    assert m.chosen == "audit"
    assert m.choose(1) == "orders"
    assert m.choose(1) == "audit"
    assert m.choose(-1) == "orders"
    pinned = TopModel(ADDRESS)
    pinned.pin("later")
    pinned.update(stats_doc(), 1.0)
    assert pinned.chosen == "later" and pinned.view(1.0).chosen is None  # shown once it exists
    unpinned = model()
    unpinned.choose_name("orders")
    del_doc = stats_doc()
    del del_doc["pipelines"]["orders"]
    unpinned.update(del_doc, 101.0)
    assert unpinned.chosen == "audit"  # the chosen pipeline was removed


def test_sort_keys() -> None:
    m = model()
    m.choose_name("orders")
    m.sort_by(5)  # ITEMS/S: big first
    assert (m.sort, m.descending) == ("rate", True)
    assert [s.name for s in m.view(100.0).stages] == ["read", "enrich", "store"]  # 80, 80 (order), 79
    m.sort_by(5)
    assert [s.name for s in m.view(100.0).stages][0] == "store"
    m.sort_by(1)  # STAGE: A→Z
    assert [s.name for s in m.view(100.0).stages] == ["enrich", "read", "store"]
    m.sort_by(8)  # QUEUE fill
    assert m.view(100.0).stages[0].name == "enrich"
    m.sort, m.descending = "order", False
    seen = []
    for _ in range(10):
        m.cycle_sort()
        seen.append(m.sort)
    assert seen == ["name", "state", "items_in", "items_out", "rate", "failed", "dead", "fill", "busy", "order"]


def test_filter_matches_pipeline_and_stage_names() -> None:
    m = model()
    m.set_filter("enr")
    view = m.view(100.0)
    assert [p.name for p in view.pipelines] == ["orders"]  # through its stage "enrich"
    assert view.chosen is not None and view.chosen.name == "orders"
    assert [s.name for s in view.stages] == ["enrich"]
    m.set_filter("ORDERS")  # a pipeline name: all its stages
    assert [s.name for s in m.view(100.0).stages] == ["read", "enrich", "store"]
    m.set_filter("nothing-like-it")
    assert m.view(100.0).pipelines == []
    m.set_filter("  ")
    assert len(m.view(100.0).pipelines) == 2


def test_unreachable_keeps_the_numbers_and_says_how_old() -> None:
    m = model(now=100.0)
    m.unreachable("cannot reach the pipelined daemon", 103.0)
    m.unreachable("cannot reach the pipelined daemon", 104.0)
    view = m.view(112.0)
    assert view.header.reachable is False and view.header.stale_s == 12.0
    assert len(view.pipelines) == 2
    line = header_line(view.header, 1.0)
    assert "UNREACHABLE" in line and "retrying every 1s" in line and "numbers from 12s ago" in line
    m.update(stats_doc(), 113.0)
    assert m.view(113.0).header.reachable is True and m.view(113.0).header.problem is None


def test_numbers_and_bars() -> None:
    assert [human(v) for v in (0, 0.5, 12.34, 999, 1234, 3_400_000)] == ["0", "0.5", "12", "999", "1.2k", "3.4M"]
    assert [duration(s) for s in (12.5, 754, 7300, 200000)] == ["12s", "12m34s", "2h01m", "2d07h"]
    assert bar(0.0, 5, UNICODE) == "░░░░░" and bar(0.01, 5, UNICODE) == "█░░░░"
    assert bar(1.0, 5, ASCII) == "#####" and bar(0.5, 4, ASCII) == "##.."


def test_latency_columns_only_when_tracked_and_columns_fit_a_width() -> None:
    doc = stats_doc()
    doc["pipelines"]["orders"]["stages"]["enrich"]["latency_ms"] = {"p50": 0.4, "p90": 1.1, "p99": 3.0}
    m = model(doc)
    m.choose_name("orders")
    view = m.view(100.0)
    assert view.tracks_latency
    columns = stage_columns(True)
    keys = [k for k, _, _ in columns]
    assert keys[-2:] == ["p50", "p99"] and "p50" not in [k for k, _, _ in stage_columns(False)]
    rows = [[stage_cell(s, k) for k in keys] for s in view.stages]
    assert rows[1][-2:] == ["0.4ms", "3.0ms"] and rows[0][-1] == "-"
    wide = fit_columns(columns, rows, 200)
    assert wide == list(range(len(columns)))
    narrow = [keys[i] for i in fit_columns(columns, rows, 60)]
    assert narrow[0] == "name" and "items_out" not in narrow and "p99" in narrow
    width = sum(max(len(title), *(len(r[keys.index(k)]) for r in rows)) + 1
                for k, title, _ in columns if k in narrow)  # fmt: skip
    assert width <= 60


def test_graph_lines_layer_the_stages_with_their_numbers() -> None:
    m = model()
    m.choose_name("orders")
    lines = graph_lines(ORDERS_GRAPH, m.view(100.0).stages)
    assert lines[0].startswith("[1] read (producer)")
    assert lines[1].strip() == "─▶ enrich"
    assert lines[2].startswith("[2] ★ enrich (processor)") and "q ██▌" not in lines[2] and "3/4 busy" in lines[2]
    assert "500/1000" in lines[2] and "9 failed" in lines[2] and "2 dead" in lines[2]
    assert lines[4].startswith("[3] store (consumer)")
    nested = {"nodes": [{"id": "outer", "kind": "pipeline", "children": {
        "nodes": [{"id": "inner", "kind": "processor"}], "edges": [{"from": "inner", "to": "outer", "route": "direct"}]}}],
        "edges": []}  # fmt: skip
    assert graph_lines(nested, []) == ["[1] outer (pipeline)", "      [1] inner (processor)", "            ─▶ outer"]


def test_once_text_is_plain_ascii_tables() -> None:
    m = model()
    views = []
    for name in m.pipeline_names():
        m.choose_name(name)
        views.append(m.view(100.0))
    text = once_text(views)
    text.encode("ascii")  # no glyph a script or a C locale could trip on
    lines = text.splitlines()
    assert lines[0].startswith(f"ok reachable {ADDRESS}, up 1h02m, 2 pipelines, 80 items/s")
    table = lines[lines.index("orders: running, runs: 1 active, 3 started, bottleneck enrich") + 1:]
    assert table[0].split() == ["STAGE", "STATE", "IN", "OUT", "ITEMS/S", "FAILED", "DEAD", "QUEUE", "BUSY"]
    assert table[2].split() == ["*enrich", "busy", "1000", "998", "80.0", "9", "2", "500/1000", "3/4"]


def test_trigger_request_from_the_dialog() -> None:
    kinds = {"read": "producer", "enrich": "processor"}
    assert trigger_request("read", "", kinds) == ("read", None)
    assert trigger_request("read", '{"n": 3}', kinds) == ("read", {"args": {"n": 3}})
    assert trigger_request("enrich", "[1, 2]", kinds) == ("enrich", {"items": [1, 2]})
    for stage_name, text, words in [
        ("nope", "", "no stage 'nope'"),
        ("read", "{oops", "not valid JSON"),
        ("read", "[1]", "give its args as a JSON object"),
        ("enrich", "", "give the items as a non-empty JSON list"),
        ("enrich", "[]", "non-empty"),
    ]:
        with pytest.raises(ValueError, match=words):
            trigger_request(stage_name, text, kinds)


def test_a_pipeline_without_stages_and_odd_values_do_not_break_rows() -> None:
    doc = stats_doc(empty=pipeline_doc("empty", {}, state="failed"),
                    odd=pipeline_doc("odd", {"x": {**stage(), "items_in": None, "busy": "?", "threads": None}}))  # fmt: skip
    m = model(doc)
    view = m.view(100.0)
    assert [(p.name, p.stages) for p in view.pipelines] == [("empty", 0), ("odd", 1)]
    m.choose_name("odd")
    assert m.view(100.0).stages[0].items_in == 0 and m.view(100.0).stages[0].busy == 0
