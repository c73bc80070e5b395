"""`pipelined` command line: one argparse tree; each subcommand lives in its own module.

- `run`                       → pipelined.daemon_main
- `check`, `graph FILE`       → pipelined.cli_offline
- `status stats trigger drain start reload`, `graph --remote NAME` → pipelined.cli_client
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelined import __version__


def build_parser() -> argparse.ArgumentParser:
    from pipelined import cli_client, cli_offline, daemon_main

    parser = argparse.ArgumentParser(
        prog="pipelined",
        description="Run TOML-defined pipelines as a hot-reloading daemon, and control it.",
    )
    parser.add_argument("--version", action="version", version=f"pipelined {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    daemon_main.add_parser(sub)
    cli_offline.add_parsers(sub)
    cli_client.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args) or 0)
