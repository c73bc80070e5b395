"""`pipelined top` against hostile input: text that looks like Textual markup (a filter, a
pipeline's load error, a stage typed in the trigger dialog), a daemon whose `/stats` answer is
JSON of the wrong shape, and a pinned pipeline name the daemon does not have. The view must show
such text as typed, say what is wrong, and keep running."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_top_app import run_app, text, until
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from top_fakes import FakeSource, pipeline_doc, stage, stats_doc

from pipelined.cli.client import ClientError
from pipelined.cli.top import print_once
from pipelined.cli.top_app import TopApp
from pipelined.cli.top_dialogs import TriggerScreen

MARKUP = "[/] [b]bold[/b] [link=x]y"
KEYS = {"[": "left_square_bracket", "]": "right_square_bracket", "/": "slash", " ": "space", "=": "equals_sign"}


def typed(text_: str) -> list[str]:
    return [KEYS.get(ch, ch) for ch in text_]


def test_a_filter_that_looks_like_markup_is_shown_as_typed() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await pilot.press("slash", *typed("[/]"), "enter")
        await pilot.pause()
        assert app.is_running and app.model.filter == "[/]"
        assert "filter '[/]'" in text(app, "#summary")

    run_app(scenario)


class ErrorWithMarkup(FakeSource):
    def pipeline(self, name: str) -> dict[str, Any]:
        self._call("pipeline", name)
        return {"name": name, "state": "failed", "error": f"{name}.toml: ImportError: {MARKUP}"}


def test_a_load_error_that_looks_like_markup_is_shown_as_sent() -> None:
    doc = stats_doc()
    doc["pipelines"]["audit"]["state"] = "failed"

    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await app.poll_now()
        await until(pilot, lambda: "error:" in text(app, "#summary"), "the load error")
        assert app.is_running and text(app, "#summary").endswith(f"error: audit.toml: ImportError: {MARKUP}")

    run_app(scenario, ErrorWithMarkup(doc), pipeline="audit")


def test_a_stage_typed_as_markup_in_the_trigger_dialog_is_named_as_typed() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        await pilot.press("t")
        assert isinstance(app.screen, TriggerScreen)
        app.screen.query_one("#stage", Input).value = ""
        await pilot.click("#stage")
        await pilot.press(*typed("[/]"), "enter")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, TriggerScreen)
        assert "no stage '[/]'" in str(app.screen.query_one("#trigger-error", Static).render())
        assert fake.count("trigger") == 0

    run_app(scenario, pipeline="orders")


@pytest.mark.parametrize(
    "answer",
    [
        {"daemon": "x", "pipelines": {}},
        {"pipelines": {"x": "not an object"}},
        {"pipelines": {"x": {"stages": {"a": None}}}},
        {"pipelines": {"x": {"stages": ["a"], "runs": []}}},
        {"pipelines": ["x"]},
    ],
)
def test_a_stats_answer_of_the_wrong_shape_is_said_and_retried(answer: dict[str, Any]) -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        fake.doc = answer
        await app.poll_now()
        assert app.is_running
        assert "not the /stats answer of a pipelined daemon" in text(app, "#status")
        assert text(app, "#header").startswith("✖ ERROR (200)")  # it answered, just not as a daemon
        fake.doc = stats_doc()
        await app.poll_now()  # a good answer again: back
        assert text(app, "#header").startswith("● reachable") and text(app, "#status") == ""

    run_app(scenario)


def test_a_pinned_name_the_daemon_does_not_have_is_said() -> None:
    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        assert text(app, "#summary").startswith("no pipeline named 'nosuch'")
        await pilot.press("tab")
        assert app.model.chosen in ("audit", "orders") and text(app, "#summary").startswith(app.model.chosen)

    run_app(scenario, pipeline="nosuch")


def test_once_with_a_stats_answer_of_the_wrong_shape_exits_1_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_once(FakeSource({"pipelines": {"x": {"stages": {"a": None}}}}), None) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("pipelined top: GET /stats: not the /stats answer of a pipelined daemon")
    assert "stage 'a' of pipeline 'x'" in err


class Hanging(FakeSource):
    """A daemon that accepted the connection and never answers (until `release` is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.hanging = threading.Event()

    def stats(self) -> dict[str, Any]:
        if self.polls_before_hang <= 0:
            self.hanging.set()
            self.release.wait(120)
        self.polls_before_hang -= 1
        return super().stats()

    polls_before_hang = 1


def test_quit_while_a_request_hangs_does_not_wait_for_it() -> None:
    """`q` must end `pipelined top` now, not when the hanging request times out (5 s for a poll,
    30 s for a trigger or drain): the blocking calls run in threads nobody waits for at exit."""
    fake = Hanging()

    async def scenario(app: TopApp, pilot: Pilot[int], fake_: FakeSource) -> None:
        app.run_worker(app.poll_now())  # the second poll: it hangs
        await until(pilot, fake.hanging.is_set, "the hanging poll")
        await pilot.press("q")

    finished = threading.Event()

    def main() -> None:
        run_app(scenario, fake)
        finished.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        assert finished.wait(60), "pipelined top did not exit while a request was hanging"
    finally:
        fake.release.set()
        thread.join(120)


class Refusing(FakeSource):
    """A daemon that answers every request with an error status (`status`), or None: healthy."""

    status: int | None = None

    def stats(self) -> dict[str, Any]:
        if self.status is not None:
            self._call("stats")
            raise ClientError(f"GET /stats: {self.status} missing or wrong bearer token", self.status)
        return super().stats()


def test_a_daemon_that_answers_with_an_error_is_not_called_unreachable() -> None:
    """A 401 (a restart with another token) or a 500 comes from a daemon that is there: the
    header says it refused or failed; only no answer at all is UNREACHABLE."""

    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        assert isinstance(fake, Refusing)
        fake.status = 401
        await app.poll_now()
        assert text(app, "#header").startswith("✖ REFUSED (401) http://127.0.0.1:8470 · retrying every 3600s")
        assert "401 missing or wrong bearer token" in text(app, "#status")
        fake.status = 500
        await app.poll_now()
        assert text(app, "#header").startswith("✖ ERROR (500) http://127.0.0.1:8470")
        fake.status, fake.down = None, True
        await app.poll_now()
        assert text(app, "#header").startswith("✖ UNREACHABLE http://127.0.0.1:8470")
        fake.down = False
        await app.poll_now()
        assert text(app, "#header").startswith("● reachable")

    run_app(scenario, Refusing())


def test_page_keys_reach_the_stages_below_the_screen() -> None:
    """A pipeline of 60 stages shows ~11 at 80×24; the stages table cannot take the focus (the
    arrows choose pipelines), so PageDown / PageUp / End / Home must scroll it — and the graph."""
    stages = {f"s{i:02d}": stage(items_in=i) for i in range(60)}
    doc = stats_doc(big=pipeline_doc("big", stages))

    async def scenario(app: TopApp, pilot: Pilot[int], fake: FakeSource) -> None:
        table = app.main.query_one("#stages", DataTable)
        await pilot.pause()
        assert table.scroll_y == 0
        await pilot.press("pagedown")
        await until(pilot, lambda: table.scroll_y > 0, "PageDown scrolled the stages")
        await pilot.press("end")
        await until(pilot, lambda: table.scroll_y == table.max_scroll_y, "End: the last stages")
        await pilot.press("home")
        await until(pilot, lambda: table.scroll_y == 0, "Home: the first stages")
        await pilot.press("pagedown", "pageup")
        await until(pilot, lambda: table.scroll_y == 0, "PageUp: back up")
        assert app.model.chosen == "big"  # paging chose no other pipeline

    run_app(scenario, FakeSource(doc), pipeline="big")
