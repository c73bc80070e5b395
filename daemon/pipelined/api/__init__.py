"""The HTTP control API: `create_app(control, ApiSettings(...))` → a Litestar app (see app.py)."""

from pipelined.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
