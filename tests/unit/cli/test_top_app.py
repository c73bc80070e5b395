"""`pipelined top`'s live view driven by Textual's Pilot against a FakeSource: keys, sorting,
filtering, the trigger and drain dialogs, an unreachable daemon, what is requested per refresh,
and the 80×24 fit. Each test runs the app headless in its own event loop (`asyncio.run`).

The refresh timer is set to an hour, so nothing polls behind a test's back: the first poll
runs on mount, later ones when the test calls `app.poll_now()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Static
from top_fakes import ADDRESS, FakeSource, stats_doc

from pipelined.cli.client import ClientError
from pipelined.cli.top_app import TopApp
from pipelined.cli.top_dialogs import ConfirmScreen, FilterScreen, HelpScreen, TriggerScreen

Scenario = Callable[[TopApp, Pilot[int], FakeSource], Awaitable[None]]


def run_app(scenario: Scenario, source: FakeSource | None = None, size: tuple[int, int] = (80, 24),
            pipeline: str | None = None) -> FakeSource:  # fmt: skip
    fake = source or FakeSource()

    async def main() -> None:
        app = TopApp(fake, pipeline=pipeline, interval=3600)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await scenario(app, pilot, fake)

    asyncio.run(main())
    return fake


async def until(pilot: Pilot[Any], condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        await pilot.pause(0.02)


def text(app: TopApp, selector: str) -> str:
    return str(app.main.query_one(selector, Static).render())


def rows(app: TopApp, selector: str) -> list[list[str]]:
    table = app.main.query_one(selector, DataTable)
    return [[str(cell).strip() for cell in table.get_row_at(i)] for i in range(table.row_count)]


def stage_names(app: TopApp) -> list[str]:
    return [row[0].lstrip("★ ") for row in rows(app, "#stages")]


def test_first_frame_header_pipelines_and_stages() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        header = text(app, "#header")
        assert header == f"● reachable {ADDRESS} · up 1h02m · 2 pipelines · 80 items/s"
        assert rows(app, "#pipelines") == [["audit", "running", "0", "0", "0.5", "1", "-"],
                                           ["orders", "running", "1", "2", "80", "3", "enrich"]]  # fmt: skip
        assert text(app, "#summary").startswith("orders: running · runs: 1 active, 3 started · bottleneck enrich")
        stages = rows(app, "#stages")
        assert [r[0] for r in stages] == ["read", "★ enrich", "store"]
        assert stages[1][1:8] == ["busy", "1.0k", "998", "80", "9", "2", "██░░░ 500"]
        assert stages[1][8] == "3/4"
        assert "P50" not in [str(c.label).strip() for c in app.main.query_one("#stages", DataTable).columns.values()]

    run_app(scenario, pipeline="orders")


def test_tab_and_arrows_choose_the_pipeline() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        assert app.model.chosen == "audit" and stage_names(app) == ["log"]
        await pilot.press("tab")
        assert app.model.chosen == "orders" and stage_names(app) == ["read", "enrich", "store"]
        assert app.main.query_one("#pipelines", DataTable).cursor_row == 1
        await pilot.press("tab")
        assert app.model.chosen == "audit"
        await pilot.press("up")
        assert app.model.chosen == "orders"
        await pilot.press("down")
        assert app.model.chosen == "audit"
        await pilot.press("shift+tab")
        assert app.model.chosen == "orders" and text(app, "#summary").startswith("orders:")

    run_app(scenario)


def test_sort_keys() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await pilot.press("5")  # ITEMS/S, biggest first
        assert stage_names(app) == ["read", "enrich", "store"] and "sort: ITEMS/S ↓" in text(app, "#summary")
        await pilot.press("5")  # again: reversed
        assert stage_names(app)[0] == "store" and "ITEMS/S ↑" in text(app, "#summary")
        await pilot.press("1")  # STAGE, A→Z
        assert stage_names(app) == ["enrich", "read", "store"]
        await pilot.press("6")  # FAILED
        assert stage_names(app)[0] == "enrich"
        await pilot.press("s")  # the next column after FAILED: DEAD
        assert "sort: DEAD ↓" in text(app, "#summary")
        for _ in range(3):
            await pilot.press("s")
        assert "sort:" not in text(app, "#summary") and stage_names(app) == ["read", "enrich", "store"]

    run_app(scenario, pipeline="orders")


def test_filter_dialog() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await pilot.press("slash")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"enr", "enter")
        assert not isinstance(app.screen, FilterScreen)
        assert [r[0] for r in rows(app, "#pipelines")] == ["orders"]
        assert stage_names(app) == ["enrich"] and "filter 'enr'" in text(app, "#summary")
        await pilot.press("slash", "x", "escape")  # Escape: the filter stays as it was
        assert app.model.filter == "enr"
        await pilot.press("slash", "backspace", "backspace", "backspace", "enter")  # empty: no filter
        assert app.model.filter == "" and len(rows(app, "#pipelines")) == 2

    run_app(scenario)


def test_trigger_asks_then_shows_the_answer() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await pilot.press("t")
        assert isinstance(app.screen, TriggerScreen)
        await pilot.press("escape")
        assert fake.count("trigger") == 0 and text(app, "#status") == "trigger orders: cancelled, nothing sent"

        await pilot.press("t", *"{oops", "enter")  # bad JSON: said in the dialog, nothing sent
        assert isinstance(app.screen, TriggerScreen)
        assert "not valid JSON" in str(app.screen.query_one("#trigger-error", Static).render())
        await pilot.press("escape")

        await pilot.press("t", *'{"n": 3}', "enter")
        await until(pilot, lambda: "started run" in text(app, "#status"), "the trigger's answer")
        assert ("trigger", "orders", "read", {"args": {"n": 3}}) in fake.calls
        assert text(app, "#status") == "trigger orders/read: started run r-000007"

        fake.answer = ClientError("POST /pipelines/orders/stages/read/trigger: 409 pipeline 'orders' is "
                                  "draining: it takes no triggers", 409)  # fmt: skip
        await pilot.press("t")
        await pilot.click("#yes")
        await until(pilot, lambda: "409" in text(app, "#status"), "the refusal")
        assert text(app, "#status").startswith("trigger orders/read: POST /pipelines/orders/stages/read/trigger: 409")
        assert fake.count("trigger") == 2

    run_app(scenario, pipeline="orders")


def test_drain_asks_then_shows_the_answer() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        fake.answer = {"state": "draining"}
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Drain pipeline 'orders'?" in str(app.screen.query_one("#question", Static).render())
        await pilot.press("n")
        assert fake.count("drain") == 0 and text(app, "#status") == "drain orders: cancelled, nothing sent"
        await pilot.press("d", "y")
        await until(pilot, lambda: text(app, "#status") == "drain orders: draining", "the drain's answer")
        assert fake.calls.count(("drain", "orders")) == 1

    run_app(scenario, pipeline="orders")


def test_unreachable_daemon_is_said_and_retried() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        fake.down = True
        await app.poll_now()
        header = text(app, "#header")
        assert header.startswith(f"✖ UNREACHABLE {ADDRESS} · retrying every 3600s")
        assert app.main.query_one("#header").has_class("down")
        assert "Connection refused" in text(app, "#status")
        assert len(rows(app, "#pipelines")) == 2  # the last numbers stay on screen
        await app.poll_now()  # still down: still running, still saying so
        assert app.is_running and "UNREACHABLE" in text(app, "#header")
        fake.garbage, fake.down = True, False  # a body that is not JSON: said, not a crash
        await app.poll_now()
        assert "ValueError" in text(app, "#status") and app.is_running
        fake.garbage = False
        await app.poll_now()  # back
        assert text(app, "#header").startswith("● reachable") and text(app, "#status") == ""
        assert not app.main.query_one("#header").has_class("down")

    run_app(scenario)


def test_unreachable_from_the_start() -> None:
    fake = FakeSource()
    fake.down = True

    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        assert text(app, "#header").startswith("✖ UNREACHABLE")
        assert rows(app, "#pipelines") == [] and text(app, "#summary") == "no pipeline loaded"
        await pilot.press("t", "d", "g", "5", "tab")  # keys on an empty view do nothing harmful
        assert app.is_running and fake.count("trigger") == fake.count("drain") == 0

    run_app(scenario, fake)


def test_one_stats_request_per_refresh_and_extras_once_per_version() -> None:
    doc = stats_doc()
    doc["pipelines"]["audit"]["state"] = "failed"

    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        for _ in range(4):
            await app.poll_now()
        # audit (chosen, failed): its error asked once; no request per pipeline
        assert fake.count("stats") == 5 and fake.calls.count(("pipeline", "audit")) == 1
        assert "error: audit.toml: boom" in text(app, "#summary")
        await pilot.press("tab", "tab", "5", "s")  # choosing and sorting ask nothing more
        await pilot.pause()
        assert fake.count("stats") == 5 and len(fake.calls) == 6
        await pilot.press("tab", "g")
        await until(pilot, lambda: "[2] ★ enrich" in text(app, "#graph"), "the graph view")
        assert not app.main.query_one("#stages", DataTable).display
        for _ in range(3):
            await app.poll_now()
        assert fake.count("graph") == 1  # once per version
        fake.doc["pipelines"]["orders"]["version"] = "aaaaaaaaaaaa"
        await app.poll_now()
        assert fake.count("graph") == 2
        await pilot.press("g")
        assert app.main.query_one("#stages", DataTable).display
        before = fake.count("graph")
        await app.poll_now()
        assert fake.count("graph") == before and fake.count("pipeline") == 1

    run_app(scenario, FakeSource(doc))


def test_fits_80x24_with_latency_columns_and_drops_columns_when_narrower() -> None:
    doc = stats_doc()
    for s in doc["pipelines"]["orders"]["stages"].values():
        s["latency_ms"] = {"p50": 12.5, "p90": 40.0, "p99": 1250.0}
        s["items_in"] = s["items_out"] = 123_456_789
    seen: dict[int, list[str]] = {}

    def at(width: int) -> Scenario:
        async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
            await pilot.pause()
            table = app.main.query_one("#stages", DataTable)
            seen[width] = [str(c.label).strip() for c in table.columns.values()]
            assert table.virtual_size.width <= width, seen[width]
            assert len(text(app, "#header")) <= 80
            assert stage_names(app) == ["read", "enrich", "store"]

        return scenario

    run_app(at(80), FakeSource(doc), size=(80, 24), pipeline="orders")
    assert seen[80] == ["STAGE", "STATE", "IN", "OUT", "ITEMS/S", "FAILED", "DEAD", "QUEUE", "BUSY", "P50", "P99"]
    run_app(at(60), FakeSource(doc), size=(60, 24), pipeline="orders")
    assert "OUT" not in seen[60] and seen[60][0] == "STAGE" and "P99" in seen[60]


def test_help_and_quit() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "t             trigger a run" in str(app.screen.query_one("#help-text", Static).render())
        await pilot.press("x")
        assert app.screen is app.main
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "quit")
        assert app.return_code == 0

    run_app(scenario)
