"""The dialogs of `pipelined top` (Textual modal screens): help, filter, trigger and drain.

Trigger and drain never act on their key alone: each dialog says exactly what will be sent and
waits for Enter / `y` / its button; Escape / `n` / Cancel closes it with nothing sent.
"""

from __future__ import annotations

from typing import Any

import orjson
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

HELP_TEXT = """\
pipelined top - keys

  q             quit
  ?             this help (arrows, PgDn scroll it; other keys close)
  Tab, Down     choose the next pipeline
  Shift+Tab, Up choose the previous pipeline
  s             sort stages by the next column (last: pipeline order)
  1 ... 9       sort by column 1-9: STAGE STATE IN OUT ITEMS/S
                FAILED DEAD QUEUE BUSY (the same key again reverses)
  /             filter pipelines and stages by name (empty: none)
  t             trigger a run of the chosen pipeline (asks first)
  d             drain the chosen pipeline (asks first)
  g             the chosen pipeline's graph / back to its stages
  PgDn PgUp     scroll the stages (or the graph); End, Home: last, first

★ marks the bottleneck (the stage busiest in its callable).
Queue bars: green under 60 %, yellow under 85 %, red above.
Items/s: averaged over the last ~5 s of refreshes.
"""

DIALOG_CSS = """
ModalScreen { align: center middle; }
.dialog { width: 76; max-width: 100%; height: auto; border: thick $accent; background: $surface; padding: 0 1; }
.dialog Input, .dialog Input:focus { border: none; height: 1; margin: 0 0 1 0; padding: 0 1; background: $boost; }
.buttons { height: auto; align: right middle; }
.buttons Button { margin-left: 1; min-width: 12; }
.error { color: $error; height: auto; }
"""


class HelpScreen(ModalScreen[None]):
    """The keys. In a terminal too small for it (under 78×24) ↓ ↑ PgDn PgUp scroll it; any
    other key closes it."""

    DEFAULT_CSS = DIALOG_CSS + "#help { max-height: 100%; }"
    SCROLL_KEYS = {"down": "scroll_down", "up": "scroll_up", "pagedown": "scroll_page_down", "pageup": "scroll_page_up"}

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(HELP_TEXT, id="help-text", markup=False)

    def on_key(self, event: Any) -> None:
        event.stop()
        scroll = self.SCROLL_KEYS.get(event.key)
        if scroll is None:
            self.dismiss(None)
        else:
            getattr(self.query_one("#help", VerticalScroll), scroll)(animate=False)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: `y` / Enter / the action button → True; `n` / Escape / Cancel → False."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", priority=True),
        Binding("n,escape", "answer(False)", "No", priority=True),
    ]

    def __init__(self, question: str, action: str) -> None:
        super().__init__()
        self.question = question
        self.action_label = action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, id="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(f"{self.action_label} (y)", id="yes", variant="warning")
                yield Button("Cancel (n)", id="no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class FilterScreen(ModalScreen[str | None]):
    """Enter applies the text (empty: no filter); Escape keeps the filter as it was."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel", priority=True)]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Filter pipelines and stages by name (Enter: apply, empty: none; Esc: cancel)")
            yield Input(value=self.current, placeholder="part of a name", id="filter")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


TriggerRequest = tuple[str, dict[str, Any] | None]  # (stage, body)


class TriggerScreen(ModalScreen[TriggerRequest | None]):
    """Which stage, with which args (producers) or items (other stages); Enter / the Trigger
    button sends it, Escape / Cancel does not. Bad input is named in the dialog, nothing sent."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel", priority=True)]

    def __init__(self, pipeline: str, kinds: dict[str, str]) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.kinds = kinds
        producers = [name for name, kind in kinds.items() if kind == "producer"]
        self.first = producers[0] if producers else next(iter(kinds), "")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Trigger a run of pipeline {self.pipeline!r}? Enter: trigger, Esc: cancel", id="question",
                         markup=False)  # fmt: skip
            yield Static("stage (producers: " + (", ".join(n for n, k in self.kinds.items() if k == "producer") or "none")
                         + ")", markup=False)  # fmt: skip
            yield Input(value=self.first, id="stage")
            yield Static('producer: args as a JSON object, e.g. {"n": 3} (empty: none); '
                         'other stages: items as a JSON list, e.g. [1, 2]')  # fmt: skip
            yield Input(placeholder="{} or [ ... ]", id="body")
            yield Static("", id="trigger-error", classes="error", markup=False)  # names what was typed
            with Horizontal(classes="buttons"):
                yield Button("Trigger", id="yes", variant="warning")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#body", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "yes":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        stage = self.query_one("#stage", Input).value.strip()
        text = self.query_one("#body", Input).value.strip()
        try:
            request = trigger_request(stage, text, self.kinds)
        except ValueError as exc:
            self.query_one("#trigger-error", Static).update(str(exc))
            return
        self.dismiss(request)


def trigger_request(stage: str, text: str, kinds: dict[str, str]) -> TriggerRequest:
    """The trigger body for `stage` from what was typed; ValueError saying what is wrong."""
    if stage not in kinds:
        known = ", ".join(kinds) or "none"
        raise ValueError(f"no stage {stage!r} in this pipeline (stages: {known})")
    value: Any = None
    if text:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    if kinds[stage] == "producer":
        if value is None or value == {}:
            return stage, None
        if not isinstance(value, dict):
            raise ValueError(f"stage {stage!r} is a producer: give its args as a JSON object")
        return stage, {"args": value}
    if not isinstance(value, list) or not value:
        raise ValueError(f"stage {stage!r} is a {kinds[stage]}: give the items as a non-empty JSON list")
    return stage, {"items": value}
