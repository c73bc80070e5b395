"""The supervisor's contracts with the layers above it.

`Control`: what the HTTP API (and anything else that steers the daemon) may ask of it.
`Notifier`: what it tells the service manager; the host passes one in
(`pipelined.host.notify.Notifier`, sd_notify), `SilentNotifier` tells no one.

`pipelined.supervisor.loop.Supervisor` implements `Control`; `pipelined.api` only adapts HTTP to it.
All methods are thread-safe and may block (the API calls them from a worker thread), except
the `*_waiter` checks, which never block (the API polls them on its event loop). They
raise `pipelined.errors.RequestError` subclasses (NotFound, Conflict, BadRequest, QueueFull,
Unavailable, Forbidden) whose `status` the API answers with; every returned value is plain
JSON-ready data (dicts, lists, str, int, float, bool, None) in exactly the shapes of the
spec's api.md.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def reload_counts(self) -> dict[str, dict[str, int]]:
        """{pipeline: {"ok": n, "failed": m}}: reloads per pipeline (the API renders `/metrics`
        from this, `daemon_stats()` and `list_pipelines()`)."""
        ...

    # -- pipelines -------------------------------------------------------------------------
    def list_pipelines(self) -> list[Json]:
        ...

    def pipeline(self, name: str) -> Json:
        """`GET /pipelines/{name}` with description, limits, loaded_at, last_reload, stages."""
        ...

    def trigger(
        self,
        name: str,
        stage: str,
        args: dict[str, Any] | None,
        items: list[Any] | None,
        priority: int | None = None,
    ) -> Json:
        """Start a run; returns {"run", "pipeline", "stage"}. Waits (≤ 10 s) during a swap.
        `priority` (−10..10): None takes a producer's `priority` key, else 0."""
        ...

    def wait_run(self, name: str, run_id: str, timeout: float) -> tuple[bool, Json]:
        """Wait for a run to end: (finished, run object)."""
        ...

    def run_waiter(self, name: str, run_id: str) -> Callable[[], bool]:
        """A non-blocking check that the run has ended (NotFound for an unknown run): the API
        polls it on its event loop, so a caller waiting for a run holds no thread."""
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

    def drain_waiter(self, name: str, timeout: float | None) -> tuple[Callable[[], bool], float]:
        """(a non-blocking "drained?" check, how long to wait: `timeout`, or the pipeline's
        drain_timeout when None); polled by the API like `run_waiter`."""
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

    def daemon_graph(self, fmt: str) -> Json | str:
        """`GET /graph`: every pipeline and the links between them; fmt as for `graph`."""
        ...

    # -- config writes (403 unless [api] config_write = true) ------------------------------
    def put_config(self, name: str, toml_text: str) -> tuple[bool, Json]:
        """Validate, write atomically, apply: (created, pipeline object). ConfigInvalid if invalid."""
        ...

    def delete_config(self, name: str) -> Json:
        ...


class Notifier(Protocol):
    """What the loop tells the service manager; each returns whether it was sent."""

    def ready(self) -> bool: ...

    def reloading(self) -> bool: ...

    def stopping(self) -> bool: ...


class SilentNotifier:
    """No service manager to tell (tests, or a host that passes none)."""

    def ready(self) -> bool:
        return False

    def reloading(self) -> bool:
        return False

    def stopping(self) -> bool:
        return False
