"""Client commands that talk to a running daemon over its HTTP API (httpx).

    pipelined status | stats [NAME] | trigger NAME STAGE [--arg k=v ...] [--items JSON] [--wait]
    pipelined drain NAME [--wait] | start NAME | reload | graph --remote NAME (parser in cli_offline)

The API address is `--api URL|unix:/path`, else `[api] listen` from the settings file (`--config`,
default /etc/pipelined/pipelined.toml), else http://127.0.0.1:8470. The token is read from
`--token-file`, else `$PIPELINED_TOKEN`, else the settings' `[api] token_file` when readable.
Human tables by default, `--json` for machines. Exit 1 with one clear line on stderr when the
daemon is unreachable or answers an error (`reload` also when any pipeline failed to reload).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

DEFAULT_API = "http://127.0.0.1:8470"
DEFAULT_SETTINGS = Path("/etc/pipelined/pipelined.toml")
UNIX_BASE_URL = "http://pipelined"
REQUEST_TIMEOUT = 30.0
RELOAD_TIMEOUT = 900.0  # a reload drains changed pipelines; systemd's own timeout applies on top


class ClientError(Exception):
    """Something to tell the user in one line (exit status 1); `status` is the HTTP status when
    the daemon answered with an error, None when it was not reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(ClientError):
    """The daemon could not be reached, or did not answer in time."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    socket: str | None  # unix socket path, or None for TCP
    token: str | None

    def describe(self) -> str:
        return f"unix:{self.socket}" if self.socket else self.base_url


# -- parsers ----------------------------------------------------------------------------------
def add_client_options(parser: argparse.ArgumentParser) -> None:
    """`--api`, `--token-file`, `--json`, `--config`: accepted after every client subcommand."""
    parser.add_argument("--api", metavar="URL", help="daemon API: http://host:port or unix:/path")
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="file holding the bearer token")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--config", type=Path, metavar="FILE", help="daemon settings file (for [api])")


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


# -- connection -------------------------------------------------------------------------------
def _settings_api(config: Path | None) -> dict[str, Any]:
    path = config or DEFAULT_SETTINGS
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if config is not None:
            raise ClientError(f"settings file {config} does not exist") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        if config is not None:
            raise ClientError(f"cannot read settings file {config}: {exc}") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ClientError(f"{path}: not valid TOML: {exc}") from None
    api = data.get("api")
    return api if isinstance(api, dict) else {}


def _base_for(listen: str) -> tuple[str, str | None]:
    if listen.startswith("unix:"):
        return UNIX_BASE_URL, listen[len("unix:") :]
    if "://" in listen:
        return listen.rstrip("/"), None
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}", None


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ClientError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise ClientError(f"token file {path} is empty")
    return token


def resolve_endpoint(args: argparse.Namespace) -> Endpoint:
    """Where the daemon listens and which token to send, from flags, environment and settings."""
    settings_api = _settings_api(getattr(args, "config", None))
    listen = getattr(args, "api", None) or settings_api.get("listen") or DEFAULT_API
    base_url, socket = _base_for(str(listen))
    token_file = getattr(args, "token_file", None)
    token: str | None = None
    if token_file is not None:
        token = _read_token(token_file)
    elif os.environ.get("PIPELINED_TOKEN"):
        token = os.environ["PIPELINED_TOKEN"].strip()
    elif settings_api.get("token_file") and os.access(str(settings_api["token_file"]), os.R_OK):
        token = _read_token(Path(str(settings_api["token_file"])))
    return Endpoint(base_url, socket, token)


class ApiClient:
    """Requests to one daemon over one kept-alive connection (`call_api` makes one per command;
    `pipelined top` keeps one for its whole session). Every failure is a ClientError (one line):
    `Unreachable` when the daemon cannot be reached or does not answer, else `status` is set."""

    def __init__(self, endpoint: Endpoint, timeout: float = REQUEST_TIMEOUT) -> None:
        self.endpoint = endpoint
        transport = httpx.HTTPTransport(uds=endpoint.socket) if endpoint.socket else None
        self._client = httpx.Client(base_url=endpoint.base_url, transport=transport, timeout=timeout)
        self._timeout = timeout

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request; ClientError (one line) when unreachable or answered with an error status."""
        endpoint = self.endpoint
        timeout = self._timeout if timeout is None else timeout
        headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._client.request(
                method, path, params=params, content=content, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            raise Unreachable(
                f"the daemon at {endpoint.describe()} did not answer {method} {path} in {timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(
                f"cannot reach the pipelined daemon at {endpoint.describe()} ({reason}); is it running? (--api)"
            ) from None
        if response.status_code >= 400:
            raise ClientError(f"{method} {path}: {response.status_code} {_detail(response)}", response.status_code)
        return response


def call_api(
    args: argparse.Namespace,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    timeout: float = REQUEST_TIMEOUT,
) -> httpx.Response:
    """One request; ClientError (one line) when unreachable or answered with an error status."""
    with ApiClient(resolve_endpoint(args), timeout) as client:
        return client.request(method, path, params=params, body=body)


def _detail(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return response.text.strip()[:500]


# -- output -----------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


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
def _guarded(command: str, args: argparse.Namespace, run: Any) -> int:
    try:
        return int(run(args) or 0)
    except ClientError as exc:
        print(f"pipelined {command}: {exc}", file=sys.stderr)
        return 1


def run_status(args: argparse.Namespace) -> int:
    return _guarded("status", args, _status)


def _status(args: argparse.Namespace) -> int:
    pipelines = call_api(args, "GET", "/pipelines").json()
    if args.json:
        print_json(pipelines)
    elif not pipelines:
        print("no pipelines loaded")
    else:
        rows = [[p["name"], p["state"], p.get("version"), p.get("stages"), p.get("error")] for p in pipelines]
        print(format_table(("NAME", "STATE", "VERSION", "STAGES", "ERROR"), rows))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    return _guarded("stats", args, _stats)


def _stats(args: argparse.Namespace) -> int:
    if args.name:
        stats = call_api(args, "GET", f"/pipelines/{args.name}/stats").json()
        if args.json:
            print_json(stats)
            return 0
        runs = stats.get("runs") or {}
        print(f"{stats['pipeline']}: {stats['state']}, version {stats.get('version')}, up {stats.get('uptime_s')}s, "
              f"runs {runs.get('active', 0)} active / {runs.get('started', 0)} started, "
              f"bottleneck {stats.get('bottleneck') or '-'}")  # fmt: skip
        print(format_table(STAGE_HEADERS, _stage_rows(stats["pipeline"], stats)))
        return 0
    stats = call_api(args, "GET", "/stats").json()
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
    return _guarded("trigger", args, _trigger)


def _trigger(args: argparse.Namespace) -> int:
    body = trigger_body(args)
    params: dict[str, Any] = {}
    timeout = REQUEST_TIMEOUT
    if args.wait:
        params["wait"] = "true"
        if args.timeout is not None:
            params["timeout"] = args.timeout
        timeout = (args.timeout if args.timeout is not None else 30.0) + REQUEST_TIMEOUT
    response = call_api(args, "POST", f"/pipelines/{args.name}/stages/{args.stage}/trigger",
                        params=params, body=body, timeout=timeout)  # fmt: skip
    run = response.json()
    if args.json:
        print_json(run)
    elif "state" not in run:
        print(f"started run {run['run']} of {run['pipeline']} at stage {run['stage']}")
    else:
        items = run.get("items") or {}
        print(f"run {run['run']}: {run['state']} ({items.get('produced', 0)} produced, "
              f"{items.get('finished', 0)} finished, {items.get('filtered', 0)} filtered, "
              f"{items.get('dead_lettered', 0)} dead-lettered)" + (f": {run['error']}" if run.get("error") else ""))  # fmt: skip
    if args.wait and run.get("state") != "completed":
        if run.get("state") == "running":
            print(f"pipelined trigger: run {run['run']} still running after the timeout", file=sys.stderr)
        return 1
    return 0


def run_drain(args: argparse.Namespace) -> int:
    return _guarded("drain", args, _drain)


def _drain(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"wait": "true"} if args.wait else {}
    if args.wait and args.timeout is not None:
        params["timeout"] = args.timeout
    timeout = (args.timeout or 600.0) + REQUEST_TIMEOUT if args.wait else REQUEST_TIMEOUT
    response = call_api(args, "POST", f"/pipelines/{args.name}/drain", params=params, timeout=timeout)
    result = response.json()
    if args.json:
        print_json(result)
    else:
        print(f"{args.name}: {result.get('state')}")
    if args.wait and response.status_code != 200:
        print(f"pipelined drain: {args.name} not drained before the timeout", file=sys.stderr)
        return 1
    return 0


def run_start(args: argparse.Namespace) -> int:
    return _guarded("start", args, _start)


def _start(args: argparse.Namespace) -> int:
    result = call_api(args, "POST", f"/pipelines/{args.name}/start", timeout=120.0).json()
    if args.json:
        print_json(result)
    else:
        print(f"{args.name}: {result.get('state')}")
    return 0


def run_reload(args: argparse.Namespace) -> int:
    return _guarded("reload", args, _reload)


def _reload(args: argparse.Namespace) -> int:
    result = call_api(args, "POST", "/reload", timeout=RELOAD_TIMEOUT).json()
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


def remote_graph(args: argparse.Namespace) -> int:
    """`pipelined graph --remote NAME [--format mermaid|dot|json]` (parser in cli_offline)."""
    return _guarded("graph", args, _remote_graph)


def _remote_graph(args: argparse.Namespace) -> int:
    fmt = "json" if getattr(args, "json", False) else getattr(args, "format", None) or "mermaid"
    response = call_api(args, "GET", f"/pipelines/{args.remote}/graph", params={"format": fmt})
    if fmt == "json":
        print_json(response.json())
    else:
        sys.stdout.write(response.text if response.text.endswith("\n") else response.text + "\n")
    return 0
