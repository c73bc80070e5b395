"""What the HTTP API (and anything else that steers the daemon) may ask of it.

`pipelined.supervisor.Supervisor` implements this; `pipelined.api` only adapts HTTP to it.
All methods are thread-safe and may block (the API calls them from a worker thread). They
raise `pipelined.errors.RequestError` subclasses (NotFound, Conflict, BadRequest, QueueFull,
Unavailable, Forbidden) whose `status` the API answers with; every returned value is plain
JSON-ready data (dicts, lists, str, int, float, bool, None) in exactly the shapes of the
spec's api.md.
"""

from __future__ import annotations

from typing import Any, Protocol

Json = Any


class Control(Protocol):
    # -- daemon ----------------------------------------------------------------------------
    def is_stopping(self) -> bool:
        """True from the moment shutdown begins (`/health` answers 503)."""
        ...

    def is_ready(self) -> bool:
        """True once every enabled pipeline has started or failed, and not reloading all / stopping."""
        ...

    def daemon_stats(self) -> Json:
        """`GET /stats`: {"daemon": {...}, "pipelines": {name: pipeline stats}}."""
        ...

    def reload(self) -> Json:
        """`POST /reload`: {"added", "updated", "removed", "unchanged", "failed"}; waits until done."""
        ...

    def metrics(self) -> bytes:
        """Prometheus text exposition (prometheus_client.generate_latest)."""
        ...

    # -- pipelines -------------------------------------------------------------------------
    def list_pipelines(self) -> list[Json]:
        ...

    def pipeline(self, name: str) -> Json:
        """`GET /pipelines/{name}` with description, limits, loaded_at, last_reload, stages."""
        ...

    def trigger(
        self, name: str, stage: str, args: dict[str, Any] | None, items: list[Any] | None
    ) -> Json:
        """Start a run; returns {"run", "pipeline", "stage"}. Waits (≤ 10 s) during a swap."""
        ...

    def wait_run(self, name: str, run_id: str, timeout: float) -> tuple[bool, Json]:
        """Wait for a run to end: (finished, run object)."""
        ...

    def runs(self, name: str) -> list[Json]:
        ...

    def run(self, name: str, run_id: str) -> Json:
        ...

    def drain(self, name: str) -> Json:
        """Begin draining; returns {"state": "draining"}. 409 when drained/failed/disabled."""
        ...

    def wait_drained(self, name: str, timeout: float | None) -> tuple[bool, Json]:
        """Wait until drained (timeout None: the pipeline's drain_timeout): (drained, stats)."""
        ...

    def start(self, name: str) -> Json:
        """From drained or failed: {"state": "running"}; 409 if running."""
        ...

    def stats(self, name: str) -> Json:
        ...

    def dead_letters(self, name: str, limit: int) -> list[Json]:
        ...

    def graph(self, name: str, fmt: str) -> Json | str:
        """fmt "json" → dict, "mermaid" / "dot" → text."""
        ...

    # -- config writes (403 unless [api] config_write = true) ------------------------------
    def put_config(self, name: str, toml_text: str) -> tuple[bool, Json]:
        """Validate, write atomically, apply: (created, pipeline object). ConfigInvalid if invalid."""
        ...

    def delete_config(self, name: str) -> Json:
        ...
