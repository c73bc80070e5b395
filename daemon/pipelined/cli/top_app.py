"""The live view of `pipelined top` (Textual). Imported only when `top` runs without `--once`.

    header     daemon address · uptime · pipelines · items/s · reachable or not
    pipelines  one row each: state, active runs, dead letters, items/s, bottleneck
    summary    the chosen pipeline: runs, bottleneck, sort, filter (or its load error)
    stages     one row per stage (or, with `g`, the graph as text)
    status     the API's answer to the last action, or why the daemon is unreachable
    footer     the keys

Every `interval` one poll runs in a thread (`Poller.poll`: one GET /stats, plus what the chosen
pipeline needs); a poll still running when the next is due is not doubled. A failed poll keeps
the last numbers on screen, says why, and the next tick simply tries again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from pipelined.cli.client import ClientError
from pipelined.cli.top_dialogs import ConfirmScreen, FilterScreen, HelpScreen, TriggerRequest, TriggerScreen
from pipelined.cli.top_model import StageRow, TopModel, View
from pipelined.cli.top_source import Poller, PollResult, TopSource
from pipelined.cli.top_text import (
    PIPELINE_COLUMNS,
    PIPELINE_DROP_ORDER,
    PIPELINE_NUMERIC,
    fill_level,
    fit_columns,
    graph_lines,
    header_line,
    pipeline_cells,
    stage_cell,
    stage_columns,
    summary_line,
)
from pipelined.cli.top_threads import in_thread, outcome, settled

PIPELINE_ROWS_SHOWN = 6
STATE_STYLES = {
    "busy": "green", "idle": "dim", "full": "bold red", "failing": "bold red", "running": "green",
    "draining": "yellow", "drained": "dim", "starting": "yellow", "failed": "bold red", "disabled": "dim",
}  # fmt: skip
FILL_STYLES = {"ok": "green", "warn": "yellow", "high": "red"}


class TopScreen(Screen[None]):
    """The main screen: its widgets and keys (dialogs are screens of their own, so their typing
    and Tab never reach these bindings)."""

    BINDINGS = [
        Binding("q", "app.quit", "Quit"),
        Binding("question_mark", "app.help", "Help"),
        Binding("tab,down", "app.choose(1)", "Next"),
        Binding("shift+tab,up", "app.choose(-1)", "Prev", show=False),
        Binding("s", "app.cycle_sort", "Sort"),
        *(Binding(str(n), f"app.sort({n})", show=False) for n in range(1, 10)),
        Binding("slash", "app.filter", "Filter"),
        Binding("t", "app.trigger", "Trigger"),
        Binding("d", "app.drain", "Drain"),
        Binding("g", "app.graph", "Graph"),
        *(Binding(key, f"app.page('{key}')", show=False) for key in ("pagedown", "pageup", "home", "end")),
    ]
    DEFAULT_CSS = """
    #header { height: 1; background: $primary-background; color: $text; }
    #header.down { background: $error; }
    #pipelines { height: auto; max-height: 7; }  /* header row + PIPELINE_ROWS_SHOWN */
    #summary { height: 1; background: $boost; }
    #stages { height: 1fr; }
    #graph-box { height: 1fr; display: none; }
    #graph { text-wrap: nowrap; text-overflow: ellipsis; }
    #status { height: 1; color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="header", markup=False)  # text from the daemon and the user: never markup
        pipelines: DataTable[Any] = DataTable(id="pipelines", cursor_type="row", cell_padding=0)
        pipelines.can_focus = False
        yield pipelines
        yield Static(id="summary", markup=False)
        stages: DataTable[Any] = DataTable(id="stages", cursor_type="none", cell_padding=0)
        stages.can_focus = False
        yield stages
        with VerticalScroll(id="graph-box"):
            yield Static(id="graph")
        yield Static(id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        app = self.app
        if isinstance(app, TopApp):
            app.render_view()
            self.call_after_refresh(app.render_view)  # again once the tables have their heights
            app.start_polling()

    def on_resize(self) -> None:
        app = self.app
        if isinstance(app, TopApp):
            app.render_view()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        app = self.app
        if isinstance(app, TopApp) and event.data_table.id == "pipelines" and event.row_key.value is not None:
            app.model.choose_name(str(event.row_key.value))
            app.refetch_if_needed()
            app.render_view()


class TopApp(App[int]):
    TITLE = "pipelined top"
    ENABLE_COMMAND_PALETTE = False  # its footer entry would crowd out the keys at 80 columns

    def __init__(
        self, source: TopSource, *, pipeline: str | None = None, interval: float = 1.0,
        poller: Poller | None = None, first_poll: Future[PollResult] | None = None,
    ) -> None:  # fmt: skip
        """`first_poll`: a poll already under way (top.py starts it before importing Textual);
        its answer draws the first frame when it is back by then, else the first tick awaits it."""
        super().__init__()
        self.source = source
        self.poller = poller or Poller(source)
        self._first = first_poll
        self.interval = interval
        self.model = TopModel(source.address)
        if pipeline:
            self.model.pin(pipeline)
        self.show_graph = False
        self.message = ""  # the last action's answer (or a secondary failure), shown in #status
        self.polls = 0  # finished polls (tests wait on this)
        self._polling = False
        self._result = PollResult()
        self._stage_keys: list[str] = []
        self._pipeline_keys: list[str] = []
        self.main = TopScreen()

    async def on_mount(self) -> None:
        first = self._first
        if first is not None and first.done():
            self._first = None
            self._apply(outcome(first))
        self.push_screen(self.main)  # its on_mount draws the first frame and starts polling

    def start_polling(self) -> None:
        self.set_interval(self.interval, self._tick)
        if self.polls == 0:
            self._tick()
        else:  # the first frame already shows the first poll
            self.refetch_if_needed()

    # -- polling ------------------------------------------------------------------------------
    def _tick(self) -> None:
        if not self._polling:
            self.run_worker(self.poll_now(), group="poll")

    async def poll_now(self) -> None:
        """One poll (in a thread), then redraw. Never raises: a failure is shown and retried."""
        if self._polling:
            return
        self._polling = True
        first, self._first = self._first, None
        result: PollResult
        try:
            if first is not None:  # still out: await it rather than ask twice
                result = await settled(first)
            else:
                result = await in_thread(self.poller.poll, self.model.chosen, self.show_graph)
        except Exception as exc:  # noqa: BLE001 - e.g. a body that is not JSON: shown, retried
            result = PollResult(problem=f"{type(exc).__name__}: {exc}")
        finally:
            self._polling = False
        self._apply(result)
        if first is not None:
            self.refetch_if_needed()  # the first poll asked for no graph nor a load error
        self.render_view()

    def _apply(self, result: PollResult) -> None:
        now = time.monotonic()
        if result.stats is not None:
            self.model.update(result.stats, now)
        else:
            self.model.unreachable(result.problem or "no answer", now, result.status)
        if result.note:
            self.message = result.note
        self._result = result
        self.polls += 1

    # -- drawing ------------------------------------------------------------------------------
    def render_view(self) -> None:
        if not self.main.is_mounted:
            return
        view = self.model.view(time.monotonic())
        header = self.main.query_one("#header", Static)
        header.update(header_line(view.header, self.interval))
        header.set_class(view.header.reachable is False, "down")
        self._draw_pipelines(view)
        chosen = view.chosen.name if view.chosen else None
        error = self._result.errors.get(chosen) if chosen else None
        self.main.query_one("#summary", Static).update(summary_line(view, error))
        self.main.query_one("#stages", DataTable).display = not self.show_graph
        self.main.query_one("#graph-box").display = self.show_graph
        if self.show_graph:
            self._draw_graph(view)
        else:
            self._draw_stages(view)
        problem = view.header.problem if view.header.reachable is False else None
        self.main.query_one("#status", Static).update(Text(problem or self.message, style="bold" if problem else ""))

    def _draw_pipelines(self, view: View) -> None:
        table = self.main.query_one("#pipelines", DataTable)
        texts = [pipeline_cells(row) for row in view.pipelines]
        bar = table.styles.scrollbar_size_vertical if len(texts) > PIPELINE_ROWS_SHOWN else 0
        keep = fit_columns(PIPELINE_COLUMNS, texts, self.size.width - bar, PIPELINE_DROP_ORDER)
        keys = [PIPELINE_COLUMNS[i][0] for i in keep]
        if keys != self._pipeline_keys:
            table.clear(columns=True)
            for i in keep:
                key, title, numeric = PIPELINE_COLUMNS[i]
                table.add_column(_label(title, numeric), key=key)
            self._pipeline_keys = keys
        else:
            table.clear()
        chosen_index = 0
        for index, (row, cells) in enumerate(zip(view.pipelines, texts, strict=True)):
            styled = [_cell(cells[i], PIPELINE_NUMERIC[i]) for i in keep]
            styled[1].stylize(STATE_STYLES.get(row.state, ""))
            table.add_row(*styled, key=row.name)
            if view.chosen is not None and row.name == view.chosen.name:
                chosen_index = index
        if view.pipelines:
            table.move_cursor(row=chosen_index, animate=False)

    def _draw_stages(self, view: View) -> None:
        table = self.main.query_one("#stages", DataTable)
        columns = stage_columns(view.tracks_latency)
        texts = [[stage_cell(s, key) for key, _, _ in columns] for s in view.stages]
        shown = table.size.height - 1  # rows below the header (0 before the first layout)
        bar = table.styles.scrollbar_size_vertical if 0 < shown < len(texts) else 0
        keep = fit_columns(columns, texts, self.size.width - bar)
        keys = [columns[i][0] for i in keep]
        if keys != self._stage_keys:
            table.clear(columns=True)
            for i in keep:
                key, title, numeric = columns[i]
                table.add_column(Text("  " + title) if key == "name" else _label(title, numeric), key=key)
            self._stage_keys = keys
        else:
            table.clear()
        for stage, cells in zip(view.stages, texts, strict=True):
            table.add_row(*(self._styled(stage, columns[i][0], cells[i], columns[i][2]) for i in keep), key=stage.name)

    @staticmethod
    def _styled(stage: StageRow, key: str, text: str, numeric: bool) -> Text:
        cell = Text(text) if key == "name" else _cell(text, numeric)  # the name starts with ★ or spaces
        if key == "name" and stage.bottleneck:
            cell.stylize("bold yellow")
        elif key == "state":
            cell.stylize(STATE_STYLES.get(stage.state, ""))
        elif key == "fill" and stage.queue_capacity > 0:
            cell.stylize(FILL_STYLES[fill_level(stage.fill)], 0, len(text.split(" ")[0]) + 1)
        elif key in ("failed", "dead") and getattr(stage, key):
            cell.stylize("red")
        return cell

    def _draw_graph(self, view: View) -> None:
        graph = self._result.graphs.get(view.chosen.name) if view.chosen else None
        if view.chosen is None:
            lines: Sequence[str] = ["no pipeline chosen"]
        elif graph is None:
            lines = [f"graph of {view.chosen.name}: loading…"]
        else:
            lines = [f"graph of {view.chosen.name} (g: back to the stage table)", "", *graph_lines(graph, view.stages)]
        self.main.query_one("#graph", Static).update(Text("\n".join(lines), no_wrap=True, overflow="ellipsis"))

    # -- keys ---------------------------------------------------------------------------------
    def action_choose(self, step: int) -> None:
        self.model.choose(step)
        self.refetch_if_needed()
        self.render_view()

    def action_sort(self, number: int) -> None:
        self.model.sort_by(number)
        self.render_view()

    def action_cycle_sort(self) -> None:
        self.model.cycle_sort()
        self.render_view()

    def action_page(self, key: str) -> None:
        """PageDown / PageUp / End / Home scroll the stages table (or the graph), which never takes
        the focus: the arrows choose pipelines."""
        target = self.main.query_one("#graph-box" if self.show_graph else "#stages")
        {"pagedown": target.scroll_page_down, "pageup": target.scroll_page_up,
         "home": target.scroll_home, "end": target.scroll_end}[key](animate=False)  # fmt: skip

    def action_graph(self) -> None:
        self.show_graph = not self.show_graph
        self.refetch_if_needed()
        self.render_view()

    def refetch_if_needed(self) -> None:
        """The graph view or a failed pipeline's error needs a request: poll now, not at the tick."""
        chosen = self.model.view(time.monotonic()).chosen
        if chosen is None:
            return
        needs_graph = self.show_graph and chosen.name not in self._result.graphs
        needs_error = chosen.state == "failed" and chosen.name not in self._result.errors
        if needs_graph or needs_error:
            self._tick()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        def apply(text: str | None) -> None:
            if text is not None:
                self.model.set_filter(text)
                self.render_view()

        self.push_screen(FilterScreen(self.model.filter), apply)

    def action_trigger(self) -> None:
        name = self.model.chosen
        kinds = self.model.stage_kinds(name) if name else {}
        if name is None or not kinds:
            self.say("trigger: no pipeline with stages is chosen")
            return

        def send(request: TriggerRequest | None) -> None:
            if request is None:
                self.say(f"trigger {name}: cancelled, nothing sent")
                return
            stage, body = request
            self.run_worker(self._act(f"trigger {name}/{stage}", self.source.trigger, name, stage, body))

        self.push_screen(TriggerScreen(name, kinds), send)

    def action_drain(self) -> None:
        name = self.model.chosen
        if name is None:
            self.say("drain: no pipeline is chosen")
            return
        question = (f"Drain pipeline {name!r}?\nIts producers stop, everything in flight finishes, then it "
                    f"takes no triggers until started again (pipelined start {name}).")  # fmt: skip

        def send(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._act(f"drain {name}", self.source.drain, name))
            else:
                self.say(f"drain {name}: cancelled, nothing sent")

        self.push_screen(ConfirmScreen(question, "Drain"), send)

    async def _act(self, what: str, call: Any, *args: Any) -> None:
        """Send an action in a thread; show the API's answer (or its error) in the status line."""
        self.say(f"{what}: sending…")
        try:
            answer = await in_thread(call, *args)
        except ClientError as exc:
            self.say(f"{what}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - shown, never a crash
            self.say(f"{what}: {type(exc).__name__}: {exc}")
            return
        if "run" in answer:
            self.say(f"{what}: started run {answer['run']}")
        elif "state" in answer:
            self.say(f"{what}: {answer['state']}")
        else:
            self.say(f"{what}: {answer}")
        await self.poll_now()

    def say(self, message: str) -> None:
        self.message = message
        self.render_view()


def _label(title: str, numeric: bool) -> Text:
    return Text(" " + title, justify="right" if numeric else "left")


def _cell(text: str, numeric: bool) -> Text:
    return Text(" " + text, justify="right" if numeric else "left")
