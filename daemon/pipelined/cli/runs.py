"""Client commands that read a pipeline's runs and dead letters from a running daemon.

    pipelined runs NAME [--limit N]           # recent runs, newest first (GET /pipelines/NAME/runs)
    pipelined run-info NAME RUN               # one run (GET /pipelines/NAME/runs/RUN)
    pipelined dead-letters NAME [--limit N]   # newest first (GET /pipelines/NAME/dead-letters)

Tables by default, `--json` for machines; connection, token and errors as every client command
(pipelined.cli.client). A 404 says which of the pipeline or the run is unknown and where to look.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import orjson

from pipelined.cli.client import ClientError, add_client_options, call_api, format_table, print_json

DEFAULT_RUNS = 20
DEFAULT_DEAD_LETTERS = 20
MAX_LIMIT = 100_000  # what GET /dead-letters accepts
ITEM_WIDTH = 60  # an item's JSON is cut to this many characters in the table
ERROR_WIDTH = 60


def add_parsers(sub: Any) -> None:
    """Add runs, run-info and dead-letters to the `pipelined` subcommands."""
    runs = sub.add_parser("runs", help="a pipeline's recent runs, newest first")
    runs.add_argument("name", metavar="NAME", help="pipeline")
    runs.add_argument("--limit", type=_limit, default=DEFAULT_RUNS, metavar="N",
                      help=f"show at most N runs (default {DEFAULT_RUNS}; the daemon keeps the last 1000)")  # fmt: skip
    runs.set_defaults(handler=run_runs)

    info = sub.add_parser("run-info", help="one run: state, times, item counts, error")
    info.add_argument("name", metavar="NAME", help="pipeline")
    info.add_argument("run", metavar="RUN", help="run id, e.g. r-000042 (see `pipelined runs NAME`)")
    info.set_defaults(handler=run_run_info)

    dead = sub.add_parser("dead-letters", help="a pipeline's latest dead letters, newest first")
    dead.add_argument("name", metavar="NAME", help="pipeline")
    dead.add_argument("--limit", type=_limit, default=DEFAULT_DEAD_LETTERS, metavar="N",
                      help=f"show at most N dead letters (default {DEFAULT_DEAD_LETTERS})")  # fmt: skip
    dead.set_defaults(handler=run_dead_letters)

    for parser in (runs, info, dead):
        add_client_options(parser)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, not {value}")
    return value


# -- commands ---------------------------------------------------------------------------------
def _guarded(command: str, args: argparse.Namespace, run: Any) -> int:
    try:
        return int(run(args) or 0)
    except ClientError as exc:
        print(f"pipelined {command}: {exc}{_hint(exc, args)}", file=sys.stderr)
        return 1


def _hint(exc: ClientError, args: argparse.Namespace) -> str:
    """What to do about a 404: list the pipelines, or the pipeline's runs."""
    if exc.status != 404:
        return ""
    if "has no run" in str(exc):
        return f" (its recent runs: pipelined runs {args.name})"
    return " (the loaded pipelines: pipelined status)"


def run_runs(args: argparse.Namespace) -> int:
    return _guarded("runs", args, _runs)


def _runs(args: argparse.Namespace) -> int:
    runs = call_api(args, "GET", f"/pipelines/{args.name}/runs").json()[: args.limit]
    if args.json:
        print_json(runs)
    elif not runs:
        print(f"{args.name}: no runs yet")
    else:
        print(format_table(RUN_HEADERS, [run_row(r) for r in runs]))
    return 0


RUN_HEADERS = ("RUN", "STAGE", "STATE", "STARTED", "TOOK", "PRODUCED", "IN FLIGHT", "FINISHED",
               "FILTERED", "DEAD", "ERROR")  # fmt: skip


def run_row(run: dict[str, Any]) -> list[Any]:
    items = run.get("items") or {}
    return [run.get("run"), run.get("stage"), run.get("state"), short_time(run.get("started_at")),
            took(run.get("started_at"), run.get("finished_at")), items.get("produced"), items.get("in_flight"),
            items.get("finished"), items.get("filtered"), items.get("dead_lettered"),
            cut(run.get("error"), ERROR_WIDTH)]  # fmt: skip


def run_run_info(args: argparse.Namespace) -> int:
    return _guarded("run-info", args, _run_info)


def _run_info(args: argparse.Namespace) -> int:
    run = call_api(args, "GET", f"/pipelines/{args.name}/runs/{args.run}").json()
    if args.json:
        print_json(run)
        return 0
    items = run.get("items") or {}
    lines = [
        ("run", run.get("run")),
        ("pipeline", run.get("pipeline")),
        ("stage", run.get("stage")),
        ("state", run.get("state")),
        ("started", run.get("started_at")),
        ("finished", run.get("finished_at")),
        ("took", took(run.get("started_at"), run.get("finished_at"))),
        *((f"items {key.replace('_', ' ')}", items.get(key))
          for key in ("produced", "in_flight", "finished", "filtered", "dead_lettered")),  # fmt: skip
        *((key, run[key]) for key in ("priority", "recovered", "parent") if key in run),
        ("error", run.get("error")),
    ]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {'-' if value is None else value}")
    return 0


def run_dead_letters(args: argparse.Namespace) -> int:
    return _guarded("dead-letters", args, _dead_letters)


def _dead_letters(args: argparse.Namespace) -> int:
    letters = call_api(args, "GET", f"/pipelines/{args.name}/dead-letters", params={"limit": args.limit}).json()
    if args.json:
        print_json(letters)
    elif not letters:
        print(f"{args.name}: no dead letters")
    else:
        rows = [[d.get("at") and short_time(d["at"]), d.get("run"), d.get("stage"), d.get("attempts"),
                 cut(d.get("error"), ERROR_WIDTH), cut(item_text(d.get("item")), ITEM_WIDTH)] for d in letters]  # fmt: skip
        print(format_table(("AT", "RUN", "STAGE", "ATTEMPTS", "ERROR", "ITEM"), rows))
    return 0


# -- cells ------------------------------------------------------------------------------------
def short_time(iso: str | None) -> str | None:
    """'2024-05-01T12:00:03.123456+00:00' → '2024-05-01 12:00:03' (UTC, as the API gives it)."""
    if not iso:
        return None
    return iso.replace("T", " ")[:19]


def took(started: str | None, finished: str | None) -> str | None:
    """Seconds between two API times ('1.52s', '3m04s'); None while running or unparsable."""
    if not started or not finished:
        return None
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def item_text(item: Any) -> str:
    """A dead letter's item as one line of JSON (the API already gave a repr for non-JSON ones)."""
    if isinstance(item, str):
        return item
    try:
        return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(item)


def cut(text: Any, width: int) -> Any:
    """One line of at most `width` characters (… marks a cut)."""
    if not isinstance(text, str):
        return text
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
