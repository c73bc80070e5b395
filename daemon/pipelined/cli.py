"""`pipelined` command line: one argparse tree; each subcommand lives in its own module.

- `run`                       → pipelined.daemon_main
- `check`, `graph FILE`       → pipelined.cli_offline
- `status stats trigger drain start reload`, `graph --remote NAME` → pipelined.cli_client
- `runs`, `run-info`, `dead-letters`  → pipelined.cli_runs
- `top`                       → pipelined.cli_top (Textual is imported only when it runs)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipelined import __version__

SHARED_OPTIONS = ("api", "token_file", "json", "config")


def build_parser() -> argparse.ArgumentParser:
    from pipelined import cli_client, cli_offline, cli_runs, cli_top, daemon_main

    parser = argparse.ArgumentParser(
        prog="pipelined",
        description="Run TOML-defined pipelines as a hot-reloading daemon, and control it.",
    )
    parser.add_argument("--version", action="version", version=f"pipelined {__version__}")
    cli_client.add_client_options(parser)  # also accepted before the subcommand
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    daemon_main.add_parser(sub)
    cli_offline.add_parsers(sub)
    cli_client.add_parsers(sub)
    cli_runs.add_parsers(sub)
    cli_top.add_parser(sub)
    for subparser in sub.choices.values():
        _defer_shared_options(subparser)
    return parser


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
