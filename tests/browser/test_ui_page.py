"""The /ui/ page in Chromium against a real daemon: graph, live numbers, trigger, drain, start,
dead letters shown as text, and no layout jump on refresh."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from browser_session import UiSession
from playwright.sync_api import Locator, Page, expect
from ui_pipelines import FLOW_BOXES, FLOW_NODES, install

from harness import DaemonProcess

pytestmark = pytest.mark.browser

OpenUi = Callable[..., UiSession]


def stage_cell(page: Page, stage: str, column: str) -> Locator:
    """The stages table's cell of `stage` under the header named `column`."""
    headers = page.locator("#stages thead th").all_inner_texts()
    index = [h.strip().lower() for h in headers].index(column) + 1
    return page.locator(f'#stages tr[data-stage="{stage}"] td:nth-child({index})')


def boxes(page: Page, selectors: list[str]) -> list[dict[str, float] | None]:
    return [page.locator(s).bounding_box() for s in selectors]


def test_graph_has_a_node_per_stage_and_its_numbers_move(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "flow", "orders").start()
    ui = open_ui(daemon, "flow")
    page = ui.page
    expect(page.locator("#p-name")).to_have_text("flow")
    expect(page.locator("#graph g.node")).to_have_count(len(FLOW_NODES))
    drawn = set(page.locator("#graph g.node").evaluate_all("nodes => nodes.map(n => n.dataset.stage)"))
    assert drawn == FLOW_NODES
    assert set(page.locator("#graph g.box").evaluate_all("nodes => nodes.map(n => n.dataset.stage)")) == FLOW_BOXES
    assert page.locator("#graph path.edge").count() >= len(FLOW_NODES)
    expect(page.locator("#stages tbody tr")).to_have_count(len(FLOW_NODES | FLOW_BOXES))

    produced = page.locator('#graph g.node[data-stage="ticks"] .n-queue')
    consumed = stage_cell(page, "sink", "in")
    expect(produced).to_have_text(re.compile(r"^out [1-9]"))
    expect(consumed).to_have_text(re.compile(r"^[1-9]"))
    first = (produced.text_content() or "", consumed.inner_text())
    expect(produced).not_to_have_text(first[0])
    expect(consumed).not_to_have_text(first[1])
    expect(page.locator('#graph g.node[data-stage="work"] .n-rate')).to_have_text(re.compile(r"/s$"))

    # work sleeps 15 ms per 20 ms tick: the busiest stage, marked on the graph and in the table
    expect(page.locator('#graph g.node[data-stage="work"]')).to_have_class(re.compile(r"\bbottleneck\b"))
    expect(page.locator('#stages tr[data-stage="work"]')).to_have_class(re.compile(r"\bbottleneck\b"))
    expect(page.locator("#p-bottleneck")).to_have_text("★ work")
    assert page.locator("#graph g.node.bottleneck").count() == 1


def test_refreshing_moves_nothing_on_the_page(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "flow").start()
    page = open_ui(daemon, "flow").page
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    counter = stage_cell(page, "sink", "in")
    expect(counter).to_have_text(re.compile(r"^[1-9]"))
    selectors = ["#graph", "#stages", ".runs-card", ".dead-card", "#answer", "#btn-trigger",
                 '#graph g.node[data-stage="sink"]', '#pipelines li[data-pipeline="flow"]']  # fmt: skip
    before = boxes(page, selectors)
    for _ in range(3):  # three refreshes, each with new numbers
        seen = counter.inner_text()
        expect(counter).not_to_have_text(seen)
        assert boxes(page, selectors) == before


def test_trigger_with_args_starts_a_run_listed_with_its_progress(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "flow", "orders").start()
    ui = open_ui(daemon, "flow")
    page = ui.page
    page.locator('#pipelines li[data-pipeline="orders"]').click()
    expect(page.locator("#p-name")).to_have_text("orders")
    expect(page.locator("#trigger-stage")).to_have_value("fetch")
    expect(page.locator("#trigger-label")).to_contain_text("args")
    page.locator("#trigger-body").fill('{"start": 10, "stop": 13, "interval": 0}')
    with page.expect_response(re.compile(r"/pipelines/orders/stages/fetch/trigger$")) as answered:
        page.locator("#btn-trigger").click()
    response = answered.value
    assert response.status == 202
    assert response.request.method == "POST"
    assert json.loads(response.request.post_data or "") == {"args": {"start": 10, "stop": 13, "interval": 0}}
    assert response.request.headers["content-type"] == "application/json"
    run = response.json()["run"]
    expect(page.locator("#answer")).to_contain_text("202")
    expect(page.locator("#answer")).to_contain_text(f"run {run} started at stage fetch")

    row = page.locator(f'#runs tr[data-run="{run}"]')
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row.locator("td:nth-child(6)")).to_have_text("3")  # produced: 10, 11, 12
    expect(row.locator("td:nth-child(8)")).to_have_text("3")  # finished
    assert daemon.client.get(f"/pipelines/orders/runs/{run}").json()["items"]["produced"] == 3


def test_trigger_shows_the_apis_refusal_and_checks_json_before_sending(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "orders").start()
    ui = open_ui(daemon, "orders")
    page = ui.page
    expect(page.locator("#trigger-stage")).to_have_value("fetch")
    page.locator("#trigger-body").fill('{"no_such_arg": 1}')
    page.locator("#btn-trigger").click()
    expect(page.locator("#answer .status")).to_have_text("400")
    expect(page.locator("#answer")).to_contain_text("no_such_arg")

    sent = len(ui.api_requests("/pipelines/orders/stages/fetch/trigger"))
    page.locator("#trigger-body").fill("{not json")
    page.locator("#btn-trigger").click()
    expect(page.locator("#answer")).to_contain_text("not valid JSON")
    assert len(ui.api_requests("/pipelines/orders/stages/fetch/trigger")) == sent

    page.locator("#trigger-stage").select_option("store")
    expect(page.locator("#trigger-label")).to_contain_text("items")
    page.locator("#trigger-body").fill('[{"id": 1}, {"id": 2}]')
    page.locator("#btn-trigger").click()
    expect(page.locator("#answer .status")).to_have_text("202")
    run = re.search(r"run (\S+) started", page.locator("#answer").inner_text())
    assert run is not None
    expect(page.locator(f'#runs tr[data-run="{run.group(1)}"] .badge')).to_have_text("completed")


def test_drain_changes_the_state_and_start_brings_it_back(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "flow", "orders").start()
    page = open_ui(daemon, "flow").page
    state = page.locator("#p-state")
    listed = page.locator('#pipelines li[data-pipeline="flow"] .state')
    expect(state).to_have_text("running")
    drain = page.locator("#btn-drain")
    drain.click()
    expect(drain).to_have_text("Confirm drain")
    assert daemon.pipeline("flow")["state"] == "running"  # the first click only asks
    drain.click()
    expect(page.locator("#answer .status")).to_have_text("202")
    expect(page.locator("#answer")).to_contain_text("draining")
    expect(state).to_have_text("drained")
    expect(listed).to_have_text("drained")
    expect(state).to_have_class(re.compile(r"\bstate-drained\b"))
    assert daemon.pipeline("orders")["state"] == "running"  # only the chosen pipeline

    page.locator("#btn-start").click()
    expect(page.locator("#answer .status")).to_have_text("200")
    expect(state).to_have_text("running")
    expect(listed).to_have_text("running")
    page.locator("#btn-start").click()
    expect(page.locator("#answer .status")).to_have_text("409")


def test_reload_button_shows_what_changed(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "orders").start()
    page = open_ui(daemon, "orders").page
    expect(page.locator("#p-state")).to_have_text("running")
    install(daemon, "fragile")
    page.locator("#btn-reload").click()
    expect(page.locator("#answer .status")).to_have_text("200")
    expect(page.locator("#answer")).to_contain_text("added fragile")
    expect(page.locator('#pipelines li[data-pipeline="fragile"]')).to_be_visible()


def test_dead_letters_and_items_are_shown_as_text(daemon: DaemonProcess, open_ui: OpenUi) -> None:
    install(daemon, "fragile").start()
    hostile: list[Any] = ['<img src=x onerror="window.__pwned = 1">', {"html": "<b>bold</b><script>window.__pwned = 2</script>"}]
    r = daemon.client.post("/pipelines/fragile/stages/judge/trigger", json={"items": hostile})
    assert r.status_code == 202, r.text
    daemon.wait_for(lambda: len(daemon.client.get("/pipelines/fragile/dead-letters").json()) == 2)
    page = open_ui(daemon, "fragile").page
    rows = page.locator("#dead-letters tbody tr")
    expect(rows).to_have_count(2)
    table = page.locator("#dead-letters").inner_text()
    assert '<img src=x onerror=\\"window.__pwned = 1\\">' in table
    assert "<b>bold</b><script>" in table and "ValueError" in table
    assert page.locator("#dead-letters img, #dead-letters b, #dead-letters script").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(stage_cell(page, "judge", "dead")).to_have_text("2")
    expect(page.locator('#graph g.node[data-stage="judge"] .n-errors')).to_have_class(re.compile(r"\bbad\b"))
    run = r.json()["run"]
    expect(page.locator(f'#runs tr[data-run="{run}"] .badge')).to_have_text("failed")
