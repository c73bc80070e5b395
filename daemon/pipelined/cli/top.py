"""`pipelined top [NAME] [--interval 1s] [--once]`: a live view of a running daemon.

The live view is a Textual app (pipelined.cli.top_app), imported only here and only when it
runs, so every other command starts without paying for Textual. `--once` prints the same tables
once as plain text (no terminal needed) and exits: 0, or 1 with one line on stderr when the
daemon is unreachable. Address and token as every client command (`--api`, `--token-file`,
`PIPELINED_TOKEN`, the settings file).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from typing import Any

from pipelined.cli.client import ClientError, add_client_options, print_json, resolve_endpoint
from pipelined.cli.top_model import TopModel
from pipelined.cli.top_source import HttpSource, Poller, TopSource, checked_stats, poll_in_background
from pipelined.cli.top_text import once_text
from pipelined.config.durations import parse_duration

MIN_INTERVAL_S = 0.1


def add_parser(sub: Any) -> None:
    top = sub.add_parser(
        "top",
        help="live view of a running daemon: pipelines, stages, rates, queues (like vector top)",
        description="A live terminal view of a running daemon. Keys: q quit, ? help, Tab/arrows choose "
        "a pipeline, s and 1-9 sort, / filter, t trigger, d drain, g graph.",
    )
    top.add_argument("name", nargs="?", metavar="NAME", help="the pipeline to show first (default: the first)")
    top.add_argument("--interval", type=_interval, default=1.0, metavar="DURATION",
                     help='time between refreshes, e.g. "1s" (default), "500ms", "2"')  # fmt: skip
    top.add_argument("--once", action="store_true",
                     help="print the tables once as plain text and exit (for scripts; no terminal needed)")  # fmt: skip
    add_client_options(top)
    top.set_defaults(handler=run_top)


def _interval(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < MIN_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL_S:g}s, not {text!r}")
    return seconds


def run_top(args: argparse.Namespace) -> int:
    try:
        endpoint = resolve_endpoint(args)
    except ClientError as exc:
        print(f"pipelined top: {exc}", file=sys.stderr)
        return 1
    source = HttpSource(endpoint)
    try:
        if args.once:
            return print_once(source, args.name, as_json=bool(getattr(args, "json", False)))
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            print("pipelined top: needs a terminal; use --once to print the tables once", file=sys.stderr)
            return 1
        poller = Poller(source)
        first = poll_in_background(poller, args.name)  # the daemon answers while Textual loads
        # the one import inside a function: Textual (~0.3 s) only for the live view, so every
        # other command, `top --once` included, starts without it
        from pipelined.cli.top_app import TopApp

        app = TopApp(source, pipeline=args.name, interval=args.interval, poller=poller, first_poll=first)
        app.run()
        return int(app.return_code or 0)
    finally:
        source.close()


def print_once(source: TopSource, name: str | None, *, as_json: bool = False) -> int:
    """One poll; the header, the pipelines and every pipeline's stages (or NAME's) as text."""
    try:
        stats = checked_stats(source.stats())
    except ClientError as exc:
        print(f"pipelined top: {exc}", file=sys.stderr)
        return 1
    now = time.monotonic()
    model = TopModel(source.address)
    model.update(stats, now)
    names = model.pipeline_names()
    if name is not None and name not in names:
        print(f"pipelined top: no pipeline named {name!r} (the loaded pipelines: pipelined status)", file=sys.stderr)
        return 1
    views = []
    for chosen in [name] if name else names:
        model.choose_name(chosen)
        views.append(model.view(now))
    if not views:  # no pipeline loaded: the header and an empty pipelines table
        views.append(model.view(now))
    if as_json:
        print_json({"header": asdict(views[0].header), "pipelines": [asdict(p) for p in views[0].pipelines],
                    "stages": {v.chosen.name: [asdict(s) for s in v.stages] for v in views if v.chosen}})  # fmt: skip
    else:
        sys.stdout.write(once_text(views))
    return 0
