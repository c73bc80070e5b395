"""`create_app(control, api_settings)`: the Litestar app the daemon serves with uvicorn.

The app is a thin adapter over `pipelined.supervisor.control.Control`: controllers turn HTTP into Control
calls (in worker threads), `errors.py` turns every exception into `{"status_code", "detail"}`,
`auth.py` guards every route but `/health`, `/ready` and the web page's files (`ui.py`, `/ui/`),
and all JSON is encoded with orjson. `/schema` is rendered offline (`schema_page.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from pipelined import __version__
from pipelined.api.auth import bearer_token_guard
from pipelined.api.blocking import make_limiters
from pipelined.api.daemon_routes import DaemonController
from pipelined.api.errors import exception_handlers, json_errors_only
from pipelined.api.pipelines import PipelinesController
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

    @classmethod
    def from_settings(cls, api: Any) -> ApiSettings:
        """From `pipelined.config.settings.ApiSettings` (reads the token file: may raise SettingsInvalid)."""
        return cls(token=api.token(), config_write=bool(api.config_write), max_body=int(api.max_body))


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

    return Litestar(
        route_handlers=[DaemonController, PipelinesController, RunsController, *UI_ROUTES],
        guards=[bearer_token_guard(settings.token)] if settings.token else [],
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
