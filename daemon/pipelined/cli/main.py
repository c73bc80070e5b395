"""`pipelined` command line: one argparse tree; each subcommand lives in its own module.

- `run`                       → pipelined.host.run (its parser is here)
- `check`, `graph FILE`       → pipelined.cli.offline
- `status stats trigger drain start reload`, `graph --remote NAME` → pipelined.cli.remote
- `runs`, `run-info`, `dead-letters` → pipelined.cli.runs
- `top`                       → pipelined.cli.top (Textual is imported only when the live view runs)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelined import __version__
from pipelined.cli import offline, remote, runs, top
from pipelined.cli.client import add_client_options
from pipelined.config.settings import LOG_FORMATS, LOG_LEVELS

SHARED_OPTIONS = ("api", "token_file", "json", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelined",
        description="Run TOML-defined pipelines as a hot-reloading daemon, and control it.",
    )
    parser.add_argument("--version", action="version", version=f"pipelined {__version__}")
    add_client_options(parser)  # also accepted before the subcommand
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run_parser(sub)
    offline.add_parsers(sub)
    remote.add_parsers(sub)
    runs.add_parsers(sub)
    top.add_parser(sub)
    for subparser in sub.choices.values():
        _defer_shared_options(subparser)
    return parser


def add_run_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground (systemd supervises it; it never forks).",
    )
    parser.add_argument("--config", type=Path, help="settings file (default /etc/pipelined/pipelined.toml)")
    parser.add_argument("--conf-dir", type=Path, help="directory of pipeline *.toml files")
    parser.add_argument("--state-dir", type=Path, help="dead letters and state")
    parser.add_argument("--listen", help='API address: "host:port" or "unix:/path"')
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower)
    parser.add_argument("--log-format", choices=LOG_FORMATS, type=str.lower)
    parser.add_argument("--no-watch", action="store_true", help="do not watch the conf dir (reload on SIGHUP / API)")
    parser.set_defaults(handler=run_daemon)


def run_daemon(args: argparse.Namespace) -> int:
    """`pipelined run`. The one import inside a function, on purpose: every `pipelined` command
    builds its parser here, and `check`, `status`, ... must not pay for importing Litestar,
    uvicorn and the engine (about a second on a small machine) that only the daemon needs."""
    from pipelined.host.run import run_command

    return run_command(args)


def _defer_shared_options(subparser: argparse.ArgumentParser) -> None:
    """A subcommand's `--api`/`--token-file`/`--json`/`--config` left out keeps the value given
    before the subcommand (argparse would otherwise overwrite it with the subcommand's default)."""
    for action in subparser._actions:  # noqa: SLF001 - argparse has no public accessor
        if action.dest in SHARED_OPTIONS:
            action.default = argparse.SUPPRESS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except BrokenPipeError:
        # the reader went away (`pipelined stats | head -1`): not an error; keep Python from
        # complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
