"""The /ui/ page kept open while things change, and against what the tables never had in the
other tests: a daemon with many pipelines (the list scrolls on its own: choosing the last one
shows its graph, not the bottom of the list), a pipeline file changed by a hot reload (the
graph and the stages table are redrawn for the new version), and names and texts that look like
HTML or are very long (a foreign or future daemon's answer, replayed with `page.route`): shown
as text, no element or script made of them, nothing pushed out of the window."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from browser_session import UiSession
from playwright.sync_api import Route, expect
from ui_pipelines import FLOW, FLOW_NODES, install

from harness import DaemonProcess

pytestmark = pytest.mark.browser

OpenUi = Callable[..., UiSession]

QUIET = """
[[stage]]
name = "keep"
kind = "consumer"
call = "pipelined.stages:log"
"""


def test_with_many_pipelines_the_list_scrolls_and_the_chosen_one_stays_in_view(
    daemon: DaemonProcess, open_ui: OpenUi
) -> None:
    for i in range(40):
        daemon.write_pipeline(f"q{i:02d}", QUIET)
    daemon.start()
    page = open_ui(daemon).page
    expect(page.locator("#pipelines li")).to_have_count(40)
    last = page.locator('#pipelines li[data-pipeline="q39"]')
    last.scroll_into_view_if_needed()
    last.click()
    expect(page.locator("#p-name")).to_have_text("q39")
    expect(page.locator('#graph g.node[data-stage="keep"]')).to_be_visible()
    height = page.viewport_size["height"] if page.viewport_size else 1000
    for selector in ("#p-name", "#graph", '#pipelines li[data-pipeline="q39"]'):
        box = page.locator(selector).bounding_box()
        assert box is not None and 0 <= box["y"] < height, (selector, box)  # on screen, together
    assert page.evaluate("window.scrollY") < 100  # the page did not scroll to the list's end (was 1,740)


WIDER = FLOW.replace(
    '[[stage]]\nname = "sink"',
    '[[stage]]\nname = "audit"\ncall = "pipelined.stages.examples:square"\n\n[[stage]]\nname = "sink"',
)


def test_a_hot_reload_redraws_the_graph_and_the_stages_of_the_open_pipeline(
    daemon: DaemonProcess, open_ui: OpenUi
) -> None:
    install(daemon, "flow").start()
    ui = open_ui(daemon, "flow")
    page = ui.page
    expect(page.locator("#graph g.node")).to_have_count(len(FLOW_NODES))
    version = page.locator("#p-version").inner_text()

    daemon.write_pipeline("flow", WIDER.replace('name = "work"', 'name = "labour"'))
    r = daemon.client.post("/reload")
    assert r.status_code == 200 and r.json()["updated"] == ["flow"], r.text
    expect(page.locator("#p-version")).not_to_have_text(version)
    expected = (FLOW_NODES - {"work"}) | {"labour", "audit"}
    expect(page.locator("#graph g.node")).to_have_count(len(expected))
    drawn = set(page.locator("#graph g.node").evaluate_all("nodes => nodes.map(n => n.dataset.stage)"))
    assert drawn == expected
    expect(page.locator('#stages tr[data-stage="work"]')).to_have_count(0)
    expect(page.locator('#stages tr[data-stage="audit"] td').nth(5)).to_have_text(re.compile(r"^[1-9]"))
    expect(page.locator("#trigger-stage option[value='labour']")).to_have_count(1)

    daemon.remove_pipeline("flow")
    daemon.write_pipeline("other", QUIET)
    assert daemon.client.post("/reload").status_code == 200
    expect(page.locator("#p-name")).to_have_text("other")  # the open one is gone: the first left
    expect(page.locator("#graph g.node")).to_have_count(1)


HOSTILE = '<img src=x onerror="window.__owned=1">'
LONG = "n" * 300


def _hostile_answers(name: str) -> dict[str, Any]:
    """GET /stats, /pipelines, /pipelines/{name} and its graph, with names and texts to misread."""
    stage_stats = {"kind": "processor", "items_in": 5, "items_out": 5, "items_failed": 0, "items_retried": 0,
                   "items_dropped": 0, "items_dead_lettered": 0, "queue_depth": 0, "queue_capacity": 10,
                   "threads": 1, "processes": 0, "busy": 0, "utilization": 0.0, "throughput_per_s": 1.0}  # fmt: skip
    stages = {HOSTILE: stage_stats, LONG: dict(stage_stats)}
    stats = {"daemon": {"version": "<b>9</b>", "uptime_s": 5, "pid": 1, "pipelines": 1, "threads": 1,
                        "processes": 0, "rss_bytes": 1},
             "pipelines": {name: {"pipeline": name, "state": "running", "version": "v1", "uptime_s": 5,
                                  "runs": {"started": 0, "completed": 0, "failed": 0, "cancelled": 0, "active": 0},
                                  "bottleneck": LONG, "stages": stages}}}  # fmt: skip
    summary = {"name": name, "state": "running", "version": "v1", "file": f"/etc/{HOSTILE}.toml", "stages": 2,
               "error": f"{HOSTILE} {LONG}"}  # fmt: skip
    detail = {**summary, "description": HOSTILE + "<script>window.__owned=2</script>",
              "stages": [{"name": HOSTILE, "kind": "processor"}, {"name": LONG, "kind": "processor"}]}
    graph = {"nodes": [{"id": HOSTILE, "kind": "processor"}, {"id": LONG, "kind": "processor"}],
             "edges": [{"from": HOSTILE, "to": LONG, "route": "<i>r</i>"}]}  # fmt: skip
    return {"stats": stats, "pipelines": [summary], "detail": detail, "graph": graph}


def test_names_and_texts_that_look_like_html_or_are_long_are_shown_as_text(
    daemon: DaemonProcess, open_ui: OpenUi
) -> None:
    install(daemon, "orders").start()
    name = "x<svg onload=alert(1)>" + "y" * 80
    answers = _hostile_answers(name)
    encoded = "pipelines/" + re.escape(quote(name, safe="-_.!~*'()"))  # as encodeURIComponent

    def reply(body: Any) -> Callable[[Route], None]:
        return lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    ui = open_ui(daemon, "none-yet")
    page = ui.page
    page.route(re.compile(r"/stats$"), reply(answers["stats"]))
    page.route(re.compile(r"/pipelines$"), reply(answers["pipelines"]))
    page.route(re.compile(encoded + r"$"), reply(answers["detail"]))
    page.route(re.compile(encoded + r"/graph$"), reply(answers["graph"]))
    page.route(re.compile(encoded + r"/(runs|dead-letters)"), reply([]))
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.reload()

    expect(page.locator("#p-name")).to_have_text(name)
    expect(page.locator("#graph g.node")).to_have_count(2)
    expect(page.locator("#p-desc")).to_have_text(HOSTILE + "<script>window.__owned=2</script>")
    expect(page.locator("#d-version")).to_have_text("<b>9</b>")
    expect(page.locator("#p-error")).to_contain_text(HOSTILE)
    expect(page.locator(f'#stages tr[data-stage="{LONG}"]')).to_have_count(1)
    assert page.locator("main img, main svg svg, main script, main i, main b").count() == 0
    assert page.locator("#pipelines img, #pipelines svg").count() == 0
    assert page.evaluate("window.__owned") is None and dialogs == []
    width = page.viewport_size["width"] if page.viewport_size else 1440
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing pushed out
    for selector in ("#p-error", "#p-bottleneck", ".controls"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] + box["width"] <= width, (selector, box)
