"""`pipelined top` at scale and in small terminals: a daemon with 200 pipelines (`--once` and the
live view compute each stage's row once per refresh, not once per pipeline shown), a terminal
40 columns wide (the pipelines table drops columns to fit, as the stage table does), names a
foreign daemon sends that look like markup or are very long, and the first frame (drawn with the
daemon's data when the first poll is back in time, never an empty "connecting" frame first)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import subprocess
import sys
from typing import Any

import pytest
from test_top_app import rows, text, until
from textual.widgets import DataTable
from top_fakes import ADDRESS, FakeSource, pipeline_doc, stage, stats_doc

from pipelined.cli import top_model
from pipelined.cli.client import ApiClient, Endpoint
from pipelined.cli.top import print_once
from pipelined.cli.top_app import TopApp
from pipelined.cli.top_dialogs import HelpScreen
from pipelined.cli.top_source import Poller, PollResult


def many(count: int = 200, stages: int = 3) -> dict[str, Any]:
    names = [f"p{i:03d}" for i in range(count)]
    return stats_doc(**{
        name: pipeline_doc(name, {f"s{j}": stage("processor", items_in=j) for j in range(stages)})
        for name in names
    })  # fmt: skip


@pytest.fixture
def stage_rows_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    real = top_model._stage_row

    def counting(name: str, *args: Any, **kwargs: Any) -> top_model.StageRow:
        built.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(top_model, "_stage_row", counting)
    return built


def test_once_with_200_pipelines_builds_each_stage_row_once(
    stage_rows_built: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert print_once(FakeSource(many()), None) == 0
    out = capsys.readouterr().out
    assert out.count("\np199: running") == 1 and "200 pipelines" in out.splitlines()[0]
    assert len(stage_rows_built) == 200 * 3  # was 360,600: 4 s of CPU for one printout


def test_live_view_with_200_pipelines_builds_each_stage_row_once_per_refresh(stage_rows_built: list[str]) -> None:
    fake = FakeSource(many())

    async def main() -> None:
        app = TopApp(fake, interval=3600)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await pilot.pause()
            assert rows(app, "#pipelines")[0][0] == "p000" and app.main.query_one("#pipelines", DataTable).row_count == 200
            stage_rows_built.clear()
            await app.poll_now()
            await pilot.press("down", "down", "s")
            assert app.model.chosen == "p002"
        assert len(stage_rows_built) == 200 * 3

    asyncio.run(main())


def test_40_columns_the_pipelines_table_fits_and_keeps_name_and_state() -> None:
    async def main() -> None:
        app = TopApp(FakeSource(), interval=3600, pipeline="orders")
        async with app.run_test(size=(40, 24)) as pilot:
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await pilot.pause()
            table = app.main.query_one("#pipelines", DataTable)
            titles = [str(c.label).strip() for c in table.columns.values()]
            assert titles[:2] == ["PIPELINE", "STATE"]
            assert table.virtual_size.width <= 40, titles
            assert not table.show_horizontal_scrollbar
            stages = app.main.query_one("#stages", DataTable)
            assert stages.virtual_size.width <= 40

    asyncio.run(main())


def test_names_that_look_like_markup_or_are_long_are_shown_as_sent() -> None:
    odd, long_name = "[b]p[/b]<script>", "s" * 300
    doc = stats_doc(**{odd: pipeline_doc(odd, {"[red]x": stage("producer", items_out=3), long_name: stage(items_in=3)},
                                         bottleneck=long_name)})  # fmt: skip

    async def main() -> None:
        app = TopApp(FakeSource(doc), interval=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await pilot.pause()
            assert rows(app, "#pipelines")[0][0] == odd
            names = [r[0] for r in rows(app, "#stages")]
            assert names[0] == "[red]x" and names[1].startswith("★ sss") and names[1].endswith("~")
            assert text(app, "#summary").startswith(f"{odd}: running")
            await pilot.press("g")
            await until(pilot, lambda: "graph of" in str(app.main.query_one("#graph").render()), "the graph")
            assert app.is_running

    asyncio.run(main())


class Recording(TopApp):
    """Records the header of every frame drawn."""

    headers: list[str]

    def render_view(self) -> None:
        super().render_view()
        if self.main.is_mounted:
            self.headers = [*getattr(self, "headers", []), text(self, "#header")]


def test_the_first_frame_shows_the_first_poll_started_before_the_app() -> None:
    fake = FakeSource()
    first: concurrent.futures.Future[PollResult] = concurrent.futures.Future()
    first.set_result(Poller(fake).poll(None, False))

    async def main() -> None:
        app = Recording(fake, interval=3600, first_poll=first)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await pilot.pause()
            assert app.headers[0].startswith(f"● reachable {ADDRESS}"), app.headers
            assert rows(app, "#pipelines")[0][0] == "audit"

    asyncio.run(main())
    assert fake.count("stats") >= 1


def test_a_first_poll_still_out_is_awaited_not_sent_twice() -> None:
    fake = FakeSource()
    first: concurrent.futures.Future[PollResult] = concurrent.futures.Future()

    async def main() -> None:
        app = Recording(fake, interval=3600, first_poll=first)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: getattr(app, "headers", None), "the first frame")
            assert app.headers[0].startswith("connecting to")  # the daemon is slow: say so
            assert fake.count("stats") == 0
            first.set_result(Poller(fake).poll(None, False))
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await pilot.pause()
            assert text(app, "#header").startswith("● reachable") and fake.count("stats") == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    ("endpoint", "loads"),
    [(Endpoint("http://127.0.0.1:8470", None, None), 0), (Endpoint("http://pipelined", "/run/p.sock", None), 0),
     (Endpoint("https://127.0.0.1:8470", None, None), 1)],
)  # fmt: skip
def test_only_an_https_endpoint_loads_the_ca_certificates(
    monkeypatch: pytest.MonkeyPatch, endpoint: Endpoint, loads: int
) -> None:
    """Loading the system's (certifi's) CA bundle took ~90 ms of top's start, for plain http."""
    calls: list[Any] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        calls.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    ApiClient(endpoint).close()
    assert (len(calls) > 0) == bool(loads), calls


def test_the_command_line_imports_no_loader_and_no_httpx_command_line() -> None:
    """What `pipelined top` (and status, runs, ...) imported before its first frame and never used:
    the pipeline loader and graph checks (only `check` and `graph FILE` need them) and httpx's own
    command line (click, pygments, rich.syntax), which `import httpx` loads when they are installed."""
    code = (
        "import sys, pipelined.cli.main as m; m.build_parser(); import pipelined.cli.top_app; "
        "print(sorted(n for n, m in sys.modules.items() if m is not None and (n.split('.')[0] in ('click', 'pygments') or n in "
        "('httpx._main', 'rich.syntax', 'pipelined.config.load', 'pipelined.graph.check', 'pipelined.graph.render'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_q_quits_while_the_first_poll_never_comes_back() -> None:
    fake = FakeSource()
    first: concurrent.futures.Future[PollResult] = concurrent.futures.Future()  # a daemon that hangs

    async def main() -> None:
        app = Recording(fake, interval=3600, first_poll=first)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: getattr(app, "headers", None), "the first frame")
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, "quit")
        assert app.polls == 0 and fake.count("stats") == 0

    asyncio.run(main())
    first.set_result(PollResult(problem="late"))  # the answer after the app ended: no error


def test_the_chosen_pipeline_is_kept_across_a_daemon_restart() -> None:
    """A restarting daemon lists no pipeline for a moment (then all of them, `starting`): the
    pipeline the operator chose with Tab stays chosen, not the first one."""
    model = top_model.TopModel(ADDRESS)
    model.update(stats_doc(), 0.0)
    assert model.chosen == "audit"
    model.choose(1)
    assert model.chosen == "orders"
    empty = stats_doc()
    empty["pipelines"] = {}
    model.update(empty, 1.0)
    model.update(stats_doc(), 2.0)
    assert model.chosen == "orders"
    gone = stats_doc()
    del gone["pipelines"]["orders"]
    model.update(gone, 3.0)  # removed for good (a reload): the first one left
    assert model.chosen == "audit"


def test_the_help_scrolls_in_a_small_terminal_and_any_other_key_closes_it() -> None:
    async def main() -> None:
        app = TopApp(FakeSource(), interval=3600)
        async with app.run_test(size=(40, 24)) as pilot:
            await until(pilot, lambda: app.polls >= 1, "the first poll")
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            box = app.screen.query_one("#help")
            assert box.max_scroll_y > 0  # the keys do not fit in 40×24 (its last lines were cut off)
            await pilot.press("pagedown", "pagedown", "pagedown")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen) and box.scroll_y == box.max_scroll_y
            await pilot.press("x")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen) and app.is_running

    asyncio.run(main())
