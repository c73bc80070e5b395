"""Client commands that ask a running daemon (over `pipelined.cli.client`).

    pipelined status | stats [NAME] | trigger NAME STAGE [--arg k=v ...] [--items JSON] [--priority N] [--wait]
    pipelined drain NAME [--wait] | start NAME | reload | graph --remote NAME (parser in cli.offline)

Human tables by default, `--json` for machines. Exit 1 with one clear line on stderr when the
daemon is unreachable or answers an error (`reload` also when any pipeline failed to reload).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from pipelined.cli.client import (
    RELOAD_TIMEOUT,
    REQUEST_TIMEOUT,
    ClientError,
    add_client_options,
    answer_json,
    call_api,
    format_table,
    guarded,
    print_json,
    segment,
)


def add_parsers(sub: Any) -> None:
    """Add status, stats, trigger, drain, start and reload to the `pipelined` subcommands."""
    status = sub.add_parser("status", help="list the daemon's pipelines and their states")
    status.set_defaults(handler=run_status)

    stats = sub.add_parser("stats", help="daemon stats, or one pipeline's stats per stage")
    stats.add_argument("name", nargs="?", metavar="NAME", help="a pipeline (default: all)")
    stats.set_defaults(handler=run_stats)

    trigger = sub.add_parser("trigger", help="start a run at a stage")
    trigger.add_argument("name", metavar="NAME", help="pipeline")
    trigger.add_argument("stage", metavar="STAGE", help="stage to start the run at")
    trigger.add_argument(
        "--arg", action="append", default=[], metavar="K=V", dest="args",
        help="producer keyword argument; V is parsed as JSON when it parses, else a string (repeatable)",
    )  # fmt: skip
    trigger.add_argument("--items", metavar="JSON", help="a JSON list of items to inject (non-producers)")
    trigger.add_argument(
        "--priority", type=int, metavar="N",
        help="the run's priority, -10..10 (default: the producer's `priority` key, else 0)",
    )  # fmt: skip
    trigger.add_argument("--wait", action="store_true", help="wait for the run to finish")
    trigger.add_argument("--timeout", type=float, metavar="S", help="seconds to wait (default 30, max 300)")
    trigger.set_defaults(handler=run_trigger)

    drain = sub.add_parser("drain", help="drain a pipeline: finish what is in flight, then stop")
    drain.add_argument("name", metavar="NAME", help="pipeline")
    drain.add_argument("--wait", action="store_true", help="wait until drained")
    drain.add_argument("--timeout", type=float, metavar="S", help="seconds to wait (default: drain_timeout)")
    drain.set_defaults(handler=run_drain)

    start = sub.add_parser("start", help="start a drained or failed pipeline")
    start.add_argument("name", metavar="NAME", help="pipeline")
    start.set_defaults(handler=run_start)

    reload = sub.add_parser("reload", help="reload every pipeline file; exit 1 if any failed")
    reload.set_defaults(handler=run_reload)

    for parser in (status, stats, trigger, drain, start, reload):
        add_client_options(parser)


# -- tables -----------------------------------------------------------------------------------
def _stage_rows(pipeline: str, stats: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for stage, s in (stats.get("stages") or {}).items():
        rows.append([pipeline, stage, s.get("kind"), s.get("items_in"), s.get("items_out"), s.get("items_failed"),
                     s.get("items_dead_lettered"), f"{s.get('queue_depth')}/{s.get('queue_capacity')}",
                     s.get("busy"), s.get("utilization"), s.get("throughput_per_s")])  # fmt: skip
    return rows


STAGE_HEADERS = (
    "PIPELINE",
    "STAGE",
    "KIND",
    "IN",
    "OUT",
    "FAILED",
    "DEAD",
    "QUEUE",
    "BUSY",
    "UTIL",
    "ITEMS/S",
)


# -- commands ---------------------------------------------------------------------------------
def run_status(args: argparse.Namespace) -> int:
    return guarded("status", args, _status)


def _status(args: argparse.Namespace) -> int:
    pipelines = answer_json(call_api(args, "GET", "/pipelines"), list)
    if args.json:
        print_json(pipelines)
    elif not pipelines:
        print("no pipelines loaded")
    else:
        rows = [[p.get("name"), p.get("state"), p.get("version"), p.get("stages"), p.get("error")] for p in pipelines]
        print(format_table(("NAME", "STATE", "VERSION", "STAGES", "ERROR"), rows))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    return guarded("stats", args, _stats)


def _stats(args: argparse.Namespace) -> int:
    if args.name:
        stats = answer_json(call_api(args, "GET", f"/pipelines/{segment(args.name, 'NAME')}/stats"))
        if args.json:
            print_json(stats)
            return 0
        runs = stats.get("runs") or {}
        print(f"{stats.get('pipeline', args.name)}: {stats.get('state')}, version {stats.get('version')}, up {stats.get('uptime_s')}s, "
              f"runs {runs.get('active', 0)} active / {runs.get('started', 0)} started, "
              f"bottleneck {stats.get('bottleneck') or '-'}")  # fmt: skip
        print(format_table(STAGE_HEADERS, _stage_rows(str(stats.get("pipeline", args.name)), stats)))
        return 0
    stats = answer_json(call_api(args, "GET", "/stats"))
    if args.json:
        print_json(stats)
        return 0
    d = stats.get("daemon") or {}
    print(f"pipelined {d.get('version')} pid {d.get('pid')}: up {d.get('uptime_s')}s, {d.get('pipelines')} "
          f"pipelines, {d.get('threads')} threads, {d.get('processes')} processes, rss {d.get('rss_bytes')} bytes")  # fmt: skip
    rows = [row for name, p in (stats.get("pipelines") or {}).items() for row in _stage_rows(name, p)]
    if rows:
        print(format_table(STAGE_HEADERS, rows))
    return 0


def parse_arg(text: str) -> tuple[str, Any]:
    """`k=v` → (k, v parsed as JSON when it parses, else the string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ClientError(f"--arg {text!r}: expected KEY=VALUE")
    try:
        return key, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return key, raw


def trigger_body(args: argparse.Namespace) -> dict[str, Any] | None:
    body = _work_body(args)
    priority = getattr(args, "priority", None)
    if priority is None:
        return body
    return {**(body or {}), "priority": priority}


def _work_body(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.args and args.items is not None:
        raise ClientError("give --arg (producers) or --items (other stages), not both")
    if args.items is not None:
        try:
            items = orjson.loads(args.items)
        except orjson.JSONDecodeError as exc:
            raise ClientError(f"--items: not valid JSON: {exc}") from None
        if not isinstance(items, list) or not items:
            raise ClientError("--items: must be a non-empty JSON list, e.g. '[1, 2]'")
        return {"items": items}
    if args.args:
        return {"args": dict(parse_arg(a) for a in args.args)}
    return None


def run_trigger(args: argparse.Namespace) -> int:
    return guarded("trigger", args, _trigger)


def _trigger(args: argparse.Namespace) -> int:
    body = trigger_body(args)
    params: dict[str, Any] = {}
    timeout = REQUEST_TIMEOUT
    if args.wait:
        params["wait"] = "true"
        if args.timeout is not None:
            params["timeout"] = args.timeout
        timeout = (args.timeout if args.timeout is not None else 30.0) + REQUEST_TIMEOUT
    path = f"/pipelines/{segment(args.name, 'NAME')}/stages/{segment(args.stage, 'STAGE')}/trigger"
    run = answer_json(call_api(args, "POST", path, params=params, body=body, timeout=timeout))
    if args.json:
        print_json(run)
    elif "state" not in run:
        print(f"started run {run.get('run')} of {run.get('pipeline')} at stage {run.get('stage')}")
    else:
        items = run.get("items") or {}
        print(f"run {run.get('run')}: {run['state']} ({items.get('produced', 0)} produced, "
              f"{items.get('finished', 0)} finished, {items.get('filtered', 0)} filtered, "
              f"{items.get('dead_lettered', 0)} dead-lettered)" + (f": {run['error']}" if run.get("error") else ""))  # fmt: skip
    if args.wait and run.get("state") != "completed":
        if run.get("state") == "running":
            print(f"pipelined trigger: run {run.get('run')} still running after the timeout", file=sys.stderr)
        return 1
    return 0


def run_drain(args: argparse.Namespace) -> int:
    return guarded("drain", args, _drain)


def _drain(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"wait": "true"} if args.wait else {}
    if args.wait and args.timeout is not None:
        params["timeout"] = args.timeout
    timeout = (args.timeout or 600.0) + REQUEST_TIMEOUT if args.wait else REQUEST_TIMEOUT
    response = call_api(args, "POST", f"/pipelines/{segment(args.name, 'NAME')}/drain", params=params, timeout=timeout)
    result = answer_json(response)
    if args.json:
        print_json(result)
    else:
        print(f"{args.name}: {result.get('state')}")
    if args.wait and response.status_code != 200:
        print(f"pipelined drain: {args.name} not drained before the timeout", file=sys.stderr)
        return 1
    return 0


def run_start(args: argparse.Namespace) -> int:
    return guarded("start", args, _start)


def _start(args: argparse.Namespace) -> int:
    result = answer_json(call_api(args, "POST", f"/pipelines/{segment(args.name, 'NAME')}/start", timeout=120.0))
    if args.json:
        print_json(result)
    else:
        print(f"{args.name}: {result.get('state')}")
    return 0


def run_reload(args: argparse.Namespace) -> int:
    return guarded("reload", args, _reload)


def _reload(args: argparse.Namespace) -> int:
    result = answer_json(call_api(args, "POST", "/reload", timeout=RELOAD_TIMEOUT))
    failed: dict[str, str] = result.get("failed") or {}
    if args.json:
        print_json(result)
    else:
        for key in ("added", "updated", "removed", "unchanged"):
            names = result.get(key) or []
            print(f"{key}: {', '.join(names) if names else '-'}")
        print(f"failed: {', '.join(sorted(failed)) if failed else '-'}")
    for name, error in sorted(failed.items()):
        print(f"pipelined reload: {name} failed to reload: {error}", file=sys.stderr)
    return 1 if failed else 0


ALL_PIPELINES = ""  # `--remote` without a NAME: the daemon-wide graph


def remote_graph(args: argparse.Namespace) -> int:
    """`pipelined graph --remote [NAME] [--format mermaid|dot|json]` (parser in cli.offline):
    one pipeline's graph, or with no NAME every pipeline and the links between them."""
    return guarded("graph", args, _remote_graph)


def _remote_graph(args: argparse.Namespace) -> int:
    fmt = "json" if getattr(args, "json", False) else getattr(args, "format", None) or "mermaid"
    path = f"/pipelines/{segment(args.remote, 'NAME')}/graph" if args.remote else "/graph"
    response = call_api(args, "GET", path, params={"format": fmt})
    if fmt == "json":
        print_json(answer_json(response))
    else:
        sys.stdout.write(response.text if response.text.endswith("\n") else response.text + "\n")
    return 0
