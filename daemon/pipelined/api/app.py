"""`create_app(control, api_settings)`: the Litestar app the daemon serves with uvicorn.

The app is a thin adapter over `pipelined.supervisor.control.Control`: controllers turn HTTP into Control
calls (in worker threads), `errors.py` turns every exception into `{"status_code", "detail"}`,
`auth.py` guards every route but `/health`, `/ready` and the web page's files (`ui.py`, `/ui/`;
routes marked `opt=PUBLIC`), `request_checks.py` refuses foreign Host and Origin headers and
bodies that are not JSON (or TOML for a PUT), and all JSON is encoded with orjson. `/schema` is
rendered offline (`schema_page.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from pipelined import __version__
from pipelined.api.auth import TokenHolder, bearer_token_guard
from pipelined.api.blocking import make_limiters
from pipelined.api.daemon_routes import DaemonController
from pipelined.api.errors import exception_handlers, json_errors_only
from pipelined.api.pipelines import PipelinesController
from pipelined.api.request_checks import HostCheck, OriginAndBodyCheck, host_patterns
from pipelined.api.responses import OrjsonResponse
from pipelined.api.runs import RunsController
from pipelined.api.schema_page import OfflineSchemaPage
from pipelined.api.ui import ROUTES as UI_ROUTES
from pipelined.supervisor.control import Control

DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class ApiSettings:
    """What the API needs from the daemon settings (`[api]`), already resolved."""

    token: str | None = None  # the token file's content; None: no auth
    config_write: bool = False  # PUT/DELETE /pipelines/{name} allowed
    max_body: int = DEFAULT_MAX_BODY  # bytes; larger bodies get 413
    listen: str | None = None  # the listen address, for the Host check (None: no Host check)
    allowed_hosts: tuple[str, ...] = ()  # more Host names to accept
    tokens: TokenHolder | None = None  # re-reads the token on reload (default: holds `token`)

    @classmethod
    def from_settings(cls, api: Any) -> ApiSettings:
        """From `pipelined.config.settings.ApiSettings` (reads the token file: may raise SettingsInvalid)."""
        token = api.token()
        return cls(
            token=token,
            config_write=bool(api.config_write),
            max_body=int(api.max_body),
            listen=str(api.listen),
            allowed_hosts=tuple(api.allowed_hosts),
            tokens=TokenHolder(token, api.token),
        )

    def token_holder(self) -> TokenHolder:
        return self.tokens if self.tokens is not None else TokenHolder(self.token)

    def middleware(self) -> list[Any]:
        """The request checks, outermost first: Host (TCP only), then Origin and Content-Type."""
        checks: list[Any] = [OriginAndBodyCheck]
        hosts = host_patterns(self.listen, self.allowed_hosts) if self.listen else None
        if hosts is not None:
            checks.insert(0, DefineMiddleware(HostCheck, hosts=hosts))
        return checks


def _openapi_config(secured: bool) -> OpenAPIConfig:
    components = Components(security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer")})
    return OpenAPIConfig(
        title="pipelined",
        version=__version__,
        description="Control API of the pipelined daemon. Errors are always"
        ' `{"status_code": int, "detail": str}`.',
        path="/schema",
        components=components,
        security=[{"BearerToken": []}] if secured else None,
        render_plugins=[OfflineSchemaPage()],
    )


def create_app(control: Control, api_settings: ApiSettings | None = None) -> Litestar:
    settings = api_settings or ApiSettings()
    state = State({"control": control, "config_write": settings.config_write, "max_body": settings.max_body})

    def start_limiters(app: Litestar) -> None:
        app.state["limiters"] = make_limiters()

    tokens = settings.token_holder()
    return Litestar(
        route_handlers=[DaemonController, PipelinesController, RunsController, *UI_ROUTES],
        guards=[bearer_token_guard(tokens)] if tokens.current else [],
        middleware=settings.middleware(),
        exception_handlers=exception_handlers(),
        after_request=json_errors_only,
        response_class=OrjsonResponse,
        request_max_body_size=settings.max_body,
        openapi_config=_openapi_config(secured=settings.token is not None),
        state=state,
        on_startup=[start_limiters],
        logging_config=None,
        debug=False,
    )
