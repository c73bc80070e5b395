"""Talking to a running daemon over its HTTP API (httpx): where it is, the request, the output.

The commands that use it are in `pipelined.cli.remote`, `pipelined.cli.runs` and `pipelined.cli.top`.

The API address is `--api URL|unix:/path`, else `[api] listen` from the settings file (`--config`,
default /etc/pipelined/pipelined.toml; `https://` when it sets `tls_cert`), else
http://127.0.0.1:8470. The token is read from `--token-file`, else `$PIPELINED_TOKEN`, else
`$CREDENTIALS_DIRECTORY/api.token` (systemd), else the settings' `[api] token_file`, else
/etc/pipelined/api.token, the first that is readable; a token found on its own (the last three) is
never sent in clear text to a host `--api` names that is not loopback (give it explicitly). HTTPS is verified against `--cacert FILE`,
else `$PIPELINED_CACERT`, else the settings' `tls_cert` (a self-signed certificate is its own
CA), else the system's CAs.
Human tables by default, `--json` for machines. Exit 1 with one clear line on stderr when the
daemon is unreachable or answers an error (`reload` also when any pipeline failed to reload).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import ssl
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from pipelined.config.secrets import token_problem

DEFAULT_API = "http://127.0.0.1:8470"
DEFAULT_SETTINGS = Path("/etc/pipelined/pipelined.toml")
DEFAULT_TOKEN_FILE = Path("/etc/pipelined/api.token")  # what tools/install creates
UNIX_BASE_URL = "http://pipelined"
REQUEST_TIMEOUT = 30.0
RELOAD_TIMEOUT = 900.0  # a reload drains changed pipelines; systemd's own timeout applies on top
NOT_THE_DAEMON = "is --api the address of a pipelined daemon?"


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
    verify: str | bool = True  # for https: a CA file, or True (the system's CAs)

    def describe(self) -> str:
        return f"unix:{self.socket}" if self.socket else self.base_url


# -- options ----------------------------------------------------------------------------------
def add_client_options(parser: argparse.ArgumentParser) -> None:
    """`--api`, `--token-file`, `--json`, `--config`: accepted after every client subcommand."""
    parser.add_argument("--api", metavar="URL", help="daemon API: http://host:port or unix:/path")
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="file holding the bearer token")
    parser.add_argument("--cacert", type=Path, metavar="FILE", help="CA certificate(s) to verify an https:// API")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--config", type=Path, metavar="FILE", help="daemon settings file (for [api])")


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


def _base_for(listen: str, scheme: str = "http") -> tuple[str, str | None]:
    if listen.startswith("unix:"):
        return UNIX_BASE_URL, listen[len("unix:") :]
    if "://" in listen:
        return listen.rstrip("/"), None
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"{scheme}://{host}:{port}", None


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ClientError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise ClientError(f"token file {path} is empty")
    return _checked_token(token, f"token file {path}")


def _checked_token(token: str, source: str) -> str:
    if problem := token_problem(token):
        raise ClientError(f"{source} {problem}")
    return token


def resolve_endpoint(args: argparse.Namespace) -> Endpoint:
    """Where the daemon listens and which token to send, from flags, environment and settings."""
    settings_api = _settings_api(getattr(args, "config", None))
    listen = getattr(args, "api", None) or settings_api.get("listen") or DEFAULT_API
    settings_cert = str(settings_api.get("tls_cert") or "")
    base_url, socket = _base_for(str(listen), "https" if settings_cert else "http")
    token_file = getattr(args, "token_file", None)
    token: str | None = None
    if token_file is not None:
        token = _read_token(token_file)
    elif os.environ.get("PIPELINED_TOKEN"):
        token = _checked_token(os.environ["PIPELINED_TOKEN"].strip(), "$PIPELINED_TOKEN")
    else:
        credential = Path(os.environ.get("CREDENTIALS_DIRECTORY") or "/nonexistent") / "api.token"
        for candidate in (credential, settings_api.get("token_file"), DEFAULT_TOKEN_FILE):
            if candidate and os.access(str(candidate), os.R_OK):
                token = _read_token(Path(str(candidate)))
                break
        if token is not None and getattr(args, "api", None) and _clear_text_to_another_host(base_url, socket):
            print(
                f"pipelined: not sending the token found on this machine in clear text to {base_url}: "
                "use https://, or give it with --token-file or $PIPELINED_TOKEN",
                file=sys.stderr,
            )
            token = None
    return Endpoint(base_url, socket, token, _verify(args, settings_cert))


def _clear_text_to_another_host(base_url: str, socket: str | None) -> bool:
    """Plain http to a host that is not this machine's loopback (a unix socket never is)."""
    if socket is not None or not base_url.startswith("http://"):
        return False
    host = httpx.URL(base_url).host
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext | bool:
    if isinstance(endpoint.verify, str):
        try:
            return ssl.create_default_context(cafile=endpoint.verify)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"cannot use the CA certificate {endpoint.verify}: {exc}") from None
    return endpoint.verify


def _verify(args: argparse.Namespace, settings_cert: str) -> str | bool:
    """The CA file to verify https with: --cacert, $PIPELINED_CACERT, the settings' tls_cert; else True."""
    cacert = getattr(args, "cacert", None) or os.environ.get("PIPELINED_CACERT")
    if cacert:
        if not os.access(str(cacert), os.R_OK):
            raise ClientError(f"cannot read the CA certificate {cacert}")
        return str(cacert)
    if settings_cert and os.access(settings_cert, os.R_OK):
        return settings_cert
    return True


class ApiClient:
    """Requests to one daemon over one kept-alive connection (`call_api` makes one per command;
    `pipelined top` keeps one for its whole session). Every failure is a ClientError (one line):
    `Unreachable` when the daemon cannot be reached or does not answer, else `status` is set."""

    def __init__(self, endpoint: Endpoint, timeout: float = REQUEST_TIMEOUT) -> None:
        self.endpoint = endpoint
        # plain http (or a unix socket) verifies nothing: loading the CA bundle took ~90 ms of CPU
        verify = _ssl_context(endpoint) if endpoint.base_url.startswith("https://") else False
        transport = httpx.HTTPTransport(uds=endpoint.socket, verify=verify) if endpoint.socket else None
        self._client = httpx.Client(base_url=endpoint.base_url, transport=transport, timeout=timeout, verify=verify)
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
            where, detail = f"{method} {path}", _detail(response)
            for named in (where, f"{method} {response.request.url.path}"):  # the daemon may name it too
                detail = detail.removeprefix(f"{named}: ")
            if response.status_code == 401:
                detail += " (this client: --token-file FILE or $PIPELINED_TOKEN)"
            raise ClientError(f"{where}: {response.status_code} {detail}", response.status_code)
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


def segment(value: str, what: str) -> str:
    """A command-line value as one URL path segment: percent-encoded, so a `/`, `?` or `#` in it
    stays part of it; '', '.' and '..' are refused (URL normalisation would drop them, and the
    request would reach another endpoint)."""
    if value in ("", ".", ".."):
        raise ClientError(f"{what} {value!r} is not a valid name")
    return quote(value, safe="")


def answer_json(response: httpx.Response, shape: type[dict[str, Any]] | type[list[Any]] = dict) -> Any:
    """The JSON body of a 2xx answer, checked to be an object (or a list of objects); a
    ClientError (one line) when it is not, e.g. when --api names some other web server."""
    where = f"{response.request.method} {response.request.url.path}"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = " ".join(response.text.split())
        raise ClientError(f"{where}: the answer is not JSON ({text[:60]!r}): {NOT_THE_DAEMON}") from None
    if not isinstance(body, shape) or (shape is list and not all(isinstance(x, dict) for x in body)):
        wanted = "a list of objects" if shape is list else "an object"
        raise ClientError(f"{where}: the answer is not {wanted} but {orjson.dumps(body).decode()[:60]}: {NOT_THE_DAEMON}")
    return body


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


def guarded(command: str, args: argparse.Namespace, run: Any) -> int:
    try:
        return int(run(args) or 0)
    except ClientError as exc:
        print(f"pipelined {command}: {exc}", file=sys.stderr)
        return 1
