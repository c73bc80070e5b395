"""The per-pipeline half of `pipelined.supervisor.control.Control`, mixed into `Supervisor`.

Every method returns JSON-ready data in the shapes of api.md and raises `RequestError`
subclasses (404 unknown pipeline/run, 409 wrong state, 503 not ready / stopping / swap timeout).
"""

from __future__ import annotations

import os
import re
import resource
import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pipelined import __version__
from pipelined.config.settings import Settings
from pipelined.config.spec import PipelineSpec, Problem
from pipelined.errors import BadRequest, ConfigInvalid, Conflict, Forbidden, NotFound, StartError, Unavailable
from pipelined.graph import render, render_daemon
from pipelined.graph.check import parse_pipeline
from pipelined.graph.links import Linked, closing_loop, loop_problem, pipeline_edges
from pipelined.graph.routing import build_graph
from pipelined.supervisor.slot import PipelineSlot

PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_RUN_WAIT = 300.0


def to_json(value: Any) -> Any:
    """Engine objects (runs, dead letters) as plain data: dicts pass, else as_json()/to_json()/to_dict()."""
    if value is None or isinstance(value, dict | list | str | int | float | bool):
        return value
    for method in ("as_json", "to_json", "to_dict", "as_dict"):
        if hasattr(value, method):
            return getattr(value, method)()
    raise TypeError(f"cannot turn {type(value).__name__} into JSON")


class PipelineQueries:
    settings: Settings
    slots: dict[str, PipelineSlot]
    slots_lock: threading.RLock
    started_at: float

    # the Supervisor's (the loop's side of Control): declared here, implemented in supervisor/loop.py
    @abstractmethod
    def is_stopping(self) -> bool: ...

    @abstractmethod
    def is_ready(self) -> bool: ...

    @abstractmethod
    def request_reload(self, source: str) -> Future[dict[str, Any]]: ...

    @abstractmethod
    def await_reload(self, reply: Future[dict[str, Any]]) -> dict[str, Any]: ...

    # -- lookup --------------------------------------------------------------------------
    def _slot(self, name: str) -> PipelineSlot:
        with self.slots_lock:
            slot = self.slots.get(name)
        if slot is None:
            raise NotFound(f"no pipeline named {name!r}")
        return slot

    def _refuse_new_work(self) -> None:
        if self.is_stopping():
            raise Unavailable("the daemon is stopping")
        if not self.is_ready() and not getattr(self, "_ready", False):
            raise Unavailable("the daemon is starting")

    # -- daemon ----------------------------------------------------------------------------
    def daemon_stats(self) -> dict[str, Any]:
        with self.slots_lock:
            slots = sorted(self.slots.values(), key=lambda s: s.name)
        threads = processes = 0
        for slot in slots:
            t, p = slot.live_workers()
            threads, processes = threads + t, processes + p
        return {
            "daemon": {
                "version": __version__,
                "uptime_s": round(time.monotonic() - self.started_at, 3),
                "pid": os.getpid(),
                "pipelines": len(slots),
                "threads": threads,
                "processes": processes,
                "rss_bytes": _rss_bytes(),
            },
            "pipelines": {slot.name: slot.stats() for slot in slots},
        }

    def reload_counts(self) -> dict[str, dict[str, int]]:
        """{pipeline: {"ok": n, "failed": m}} for `pipelined_reloads_total`."""
        with self.slots_lock:
            return {name: dict(slot.reloads) for name, slot in self.slots.items()}

    # -- pipelines -------------------------------------------------------------------------
    def list_pipelines(self) -> list[dict[str, Any]]:
        with self.slots_lock:
            slots = sorted(self.slots.values(), key=lambda s: s.name)
        return [slot.summary() for slot in slots]

    def pipeline(self, name: str) -> dict[str, Any]:
        return self._slot(name).detail()

    def trigger(
        self,
        name: str,
        stage: str,
        args: dict[str, Any] | None,
        items: list[Any] | None,
        priority: int | None = None,
    ) -> dict[str, Any]:
        self._refuse_new_work()
        slot = self._slot(name)
        run_id = slot.trigger(stage, args, items, priority)
        return {"run": run_id, "pipeline": name, "stage": stage}

    def wait_run(self, name: str, run_id: str, timeout: float) -> tuple[bool, dict[str, Any]]:
        slot = self._slot(name)
        self.run(name, run_id)  # 404 for an unknown run
        slot.book.runs.wait(run_id, min(max(timeout, 0.0), MAX_RUN_WAIT))
        run = self.run(name, run_id)
        return run.get("state") != "running", run

    def run_waiter(self, name: str, run_id: str) -> Callable[[], bool]:
        self.run(name, run_id)  # 404 for an unknown run, named like the other answers
        run = self._slot(name).book.runs.run(run_id)
        return lambda: run.ended

    def runs(self, name: str) -> list[dict[str, Any]]:
        return [to_json(run) for run in self._slot(name).book.runs.list()]

    def run(self, name: str, run_id: str) -> dict[str, Any]:
        slot = self._slot(name)
        try:
            run = slot.book.runs.get(run_id)
        except KeyError:
            run = None
        if run is None:
            raise NotFound(f"pipeline {name!r} has no run {run_id!r}")
        return dict(to_json(run))

    def drain(self, name: str) -> dict[str, Any]:
        slot = self._slot(name)
        with slot.lock:
            state = slot.state
            if state in ("drained", "failed", "disabled") or slot.runtime is None:
                raise Conflict(f"pipeline {name!r} is {state}; nothing to drain")
            if state != "draining":
                slot.runtime.begin_drain()
        return {"state": "draining"}

    def wait_drained(self, name: str, timeout: float | None) -> tuple[bool, dict[str, Any]]:
        slot = self._slot(name)
        runtime = slot.runtime
        if runtime is None:
            return slot.state != "failed", slot.stats()
        drained = bool(runtime.wait_drained(slot.drain_timeout if timeout is None else timeout))
        return drained, slot.stats()

    def drain_waiter(self, name: str, timeout: float | None) -> tuple[Callable[[], bool], float]:
        slot = self._slot(name)
        runtime = slot.runtime
        wait = slot.drain_timeout if timeout is None else timeout
        if runtime is None:
            return (lambda: True), wait
        return (lambda: bool(runtime.wait_drained(0))), wait

    def start(self, name: str) -> dict[str, Any]:
        if self.is_stopping():
            raise Unavailable("the daemon is stopping")
        slot = self._slot(name)
        with slot.lock:
            state = slot.state
            if state not in ("drained", "failed"):
                raise Conflict(f"pipeline {name!r} is {state}; only a drained or failed pipeline can be started")
            version = slot.version
            if version is None:
                raise Conflict(f"pipeline {name!r} cannot start: {slot.error or 'its file is invalid'}")
            try:
                slot.start_version(version)
            except Exception as exc:  # noqa: BLE001 - reported to the caller and kept as the error
                error = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
                slot.runtime, slot.error = None, error
                raise Conflict(f"pipeline {name!r} failed to start: {error}") from exc
            if version.spec.version == slot.file_version:  # the file's content runs now
                slot.error, slot.pending_error = None, False
        return {"state": "running"}

    def stats(self, name: str) -> dict[str, Any]:
        return self._slot(name).stats()

    def dead_letters(self, name: str, limit: int) -> list[dict[str, Any]]:
        return [to_json(letter) for letter in self._slot(name).book.dead_letters.list(limit)]

    def graph(self, name: str, fmt: str) -> Any:
        slot = self._slot(name)
        if slot.version is None:
            raise Conflict(f"pipeline {name!r} has no valid version to draw: {slot.error}")
        graph, allocation = slot.version.graph, slot.planned_allocation()
        renderers = {"json": render.render_json, "mermaid": render.render_mermaid, "dot": render.render_dot}
        if fmt not in renderers:
            raise BadRequest(f"format: expected json, mermaid or dot, got {fmt!r}")
        return renderers[fmt](graph, allocation)

    def daemon_graph(self, fmt: str) -> Any:
        renderers = {
            "json": render_daemon.render_daemon_json,
            "mermaid": render_daemon.render_daemon_mermaid,
            "dot": render_daemon.render_daemon_dot,
        }
        if fmt not in renderers:
            raise BadRequest(f"format: expected json, mermaid or dot, got {fmt!r}")
        with self.slots_lock:
            slots = list(self.slots.values())
        drawings = [
            render_daemon.PipelineDrawing(
                slot.name,
                slot.state,
                slot.version.graph if slot.version is not None else None,
                slot.planned_allocation() if slot.version is not None else None,
            )
            for slot in slots
        ]
        return renderers[fmt](drawings)

    # -- config writes -------------------------------------------------------------------------
    def _check_config_write(self, name: str) -> Path:
        if not self.settings.api.config_write:
            raise Forbidden("config writes are switched off; set [api] config_write = true")
        if not PIPELINE_NAME.fullmatch(name):
            raise BadRequest(f"name: invalid pipeline name {name!r}: must match [a-z0-9][a-z0-9_-]{{0,63}}")
        if self.is_stopping():
            raise Unavailable("the daemon is stopping")
        return self.settings.daemon.conf_dir / f"{name}.toml"

    def put_config(self, name: str, toml_text: str) -> tuple[bool, dict[str, Any]]:
        path = self._check_config_write(name)
        spec, problems = parse_pipeline(toml_text, path)  # routing problems included
        if spec is None or any(p.severity == "error" for p in problems):
            raise ConfigInvalid(problems)
        loop = self._link_loop(spec)
        if loop is not None:
            raise ConfigInvalid([*problems, loop])
        created = not path.exists()
        _write_atomically(path, toml_text)
        self.await_reload(self.request_reload("api"))
        return created, self.pipeline(name)

    def _link_loop(self, spec: PipelineSpec) -> Problem | None:
        """The error when `spec`'s `to` links would close a loop with the pipelines loaded now."""
        with self.slots_lock:
            loaded = {
                slot.name: Linked(slot.version.spec, slot.version.graph)
                for slot in self.slots.values()
                if slot.version is not None and slot.name != spec.name
            }
        mine = Linked(spec, build_graph(spec).graph)
        edges = pipeline_edges(loaded.values())
        loop = closing_loop(edges, spec.name, pipeline_edges([mine])[spec.name])
        return None if loop is None else loop_problem(mine, loop, loaded)

    def delete_config(self, name: str) -> dict[str, Any]:
        path = self._check_config_write(name)
        if not path.exists():
            raise NotFound(f"no pipeline file {path}")
        path.unlink()
        result = self.await_reload(self.request_reload("api"))
        return {"name": name, "removed": name in result["removed"]}


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
