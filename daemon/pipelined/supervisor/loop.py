"""The control loop: start = reload from empty, transactional per-pipeline reload, drain, stop.

One queue of events (`reload`, `stop`); SIGHUP, the conf.d watcher and `POST /reload` all put the
same `reload` event on it and signal handlers do nothing else (SIGTERM/SIGINT also flip
`is_stopping()` at once so `/health` answers 503 immediately). The loop runs in the main thread;
pending reload events are coalesced into one re-scan whose result answers every waiter.
`Supervisor` also implements `pipelined.supervisor.control.Control` (pipeline queries live in
`pipelined.supervisor.queries.PipelineQueries`; the re-scan and how its changes are applied in
`pipelined.supervisor.rescan.PipelineReloads`). It tells the service manager what it does
through a `Notifier` the host passes in (`pipelined.host.notify.Notifier`: sd_notify).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from pipelined.config.settings import Settings
from pipelined.errors import Unavailable
from pipelined.graph import limits
from pipelined.logcontext import preformatted_line
from pipelined.supervisor import orphans
from pipelined.supervisor.control import Notifier, SilentNotifier
from pipelined.supervisor.links import LinkRouter
from pipelined.supervisor.queries import PipelineQueries
from pipelined.supervisor.reload import ReloadResult
from pipelined.supervisor.rescan import PipelineReloads
from pipelined.supervisor.shutdown import drain_all
from pipelined.supervisor.slot import PipelineSlot
from pipelined.workers.bounded import busy_until

log = logging.getLogger("pipelined.supervisor")

LOOP_TICK = 0.5
LOOP_STALL = 15.0  # the loop counts as unhealthy when idle-waiting stopped this long ago


@dataclass
class Event:
    kind: str  # "reload" | "stop"
    source: str
    reply: Future[dict[str, Any]] | None = field(default=None)


class Supervisor(PipelineReloads, PipelineQueries):
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier: Notifier = notifier or SilentNotifier()
        self.slots: dict[str, PipelineSlot] = {}
        self.slots_lock = threading.RLock()
        self.budget = limits.DaemonBudget(settings.daemon.max_threads, settings.daemon.max_processes)
        self.links = LinkRouter(self._slot_or_none)  # how runtimes deliver to other pipelines
        self.started_at = time.monotonic()
        self.invalid_files: dict[str, str] = {}
        self.orphaned_buffers: list[dict[str, Any]] = []  # buffer files without a pipeline file
        self.on_reloaded: list[Any] = []  # callables(Supervisor) run after each reload (watcher paths)
        self.on_ready: list[Any] = []  # callables() run after each READY=1 (start and every reload)
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._stopping = False
        self._ready = False
        self._reloading_all = False
        self._reload_announced = False
        self.used_code: dict[str, dict[str, str]] = {}  # per pipeline: {file: sha256} its version imported
        self._failed_files: dict[str, str] = {}  # the last reload's `failed` (logged when it changes)
        self._loop_beat = time.monotonic()
        self._busy_until = 0.0
        self._loop_thread: threading.Thread | None = None
        self._loop_ended = threading.Event()  # no more events are handled

    # -- events ----------------------------------------------------------------------------
    def request_reload(self, source: str) -> Future[dict[str, Any]]:
        reply: Future[dict[str, Any]] = Future()
        self._events.put(Event("reload", source, reply))
        return reply

    def request_stop(self, source: str) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping()
        self._events.put(Event("stop", source))

    def install_signal_handlers(self) -> None:
        """SIGHUP → reload; SIGTERM/SIGINT → stop; a second SIGINT exits at once (130)."""

        def on_hup(signum: int, frame: Any) -> None:
            self._events.put(Event("reload", "SIGHUP"))

        def on_term(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._stopping:
                os.write(2, preformatted_line("second SIGINT: exiting now (130) without finishing the drain"))
                os._exit(130)
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    # -- the loop --------------------------------------------------------------------------
    def run_loop(self) -> int:
        """First apply, READY=1, then handle events until stop; drains everything; returns 0."""
        self._loop_thread = threading.current_thread()
        if not self._stopping:
            self._run_reload("start")
            freeze_startup_objects()
            self._ready = True
            self._announce_ready()
            log.info("ready: %s", self.status_line())
        while True:
            try:
                event = self._events.get(timeout=LOOP_TICK)
            except queue.Empty:
                self._loop_beat = time.monotonic()
                continue
            self._loop_beat = time.monotonic()
            if event.kind == "stop":
                log.info("%s received", event.source)
                break
            waiters, stop_after = self._coalesce(event)
            if stop_after:
                for reply in waiters:
                    reply.set_exception(Unavailable("the daemon is stopping"))
                break
            self._reload_and_answer(event.source, waiters)
        self._loop_ended.set()
        self._shutdown()
        return 0

    def _announce_ready(self) -> None:
        self.notifier.ready()
        for hook in self.on_ready:
            hook()

    def _coalesce(self, first: Event) -> tuple[list[Future[dict[str, Any]]], bool]:
        """Every reload event already queued joins this one; a queued stop ends the loop."""
        waiters = [first.reply] if first.reply else []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return waiters, self._stopping
            if event.kind == "stop":
                return waiters, True
            if event.reply:
                waiters.append(event.reply)

    def _reload_and_answer(self, source: str, waiters: list[Future[dict[str, Any]]]) -> None:
        """SIGHUP and the API always announce RELOADING=1 … READY=1; a watcher event only when
        the re-scan finds something to change (a no-op re-scan, e.g. after the watched
        directories changed, stays silent)."""
        self._reload_announced = False
        if source != "watcher":
            self._announce_reloading()
        self._reloading_all = source != "watcher"
        try:
            result = self._run_reload(source)
        except Exception as exc:  # noqa: BLE001 - a reload bug must not kill the loop
            log.exception("reload failed unexpectedly")
            for reply in waiters:
                reply.set_exception(exc)
            return
        finally:
            self._reloading_all = False
            if self._reload_announced:
                self._announce_ready()
        for reply in waiters:
            reply.set_result(result.as_json())

    def _announce_reloading(self) -> None:
        """RELOADING=1 once per reload, and only after the first READY=1."""
        if self._ready and not self._reload_announced:
            self._reload_announced = True
            self.notifier.reloading()

    def _run_reload(self, source: str) -> ReloadResult:
        self._busy_until = time.monotonic() + self._longest_drain() + 60
        try:
            result = self.reload_all()
        finally:
            self._busy_until = 0.0
            self._loop_beat = time.monotonic()
        failed_before, self._failed_files = self._failed_files, dict(result.failed)
        if result.added or result.updated or result.removed or result.failed != failed_before or source != "watcher":
            log.info(
                "reload (%s): added %s, updated %s, removed %s, unchanged %d, failed %s", source,
                result.added, result.updated, result.removed, len(result.unchanged), sorted(result.failed),
            )  # fmt: skip
        if source == "start" or result.added or result.removed or result.failed:
            self._look_for_orphans()
        for hook in self.on_reloaded:
            hook(self)
        return result

    def _look_for_orphans(self) -> None:
        """Disk buffer files that no pipeline file owns: a warning each, listed in the stats."""
        with self.slots_lock:
            names = set(self.slots)
        names.update(file_name.rsplit(".", 1)[0] for file_name in self.invalid_files)
        daemon = self.settings.daemon
        try:
            found = orphans.find_orphans(daemon.state_dir, names)
        except OSError as exc:  # an unreadable state dir: the pipelines' own starts say more
            log.warning("cannot look for orphaned disk buffer files in %s: %s", daemon.state_dir, exc)
            return
        orphans.warn_about(found, self.orphaned_buffers, daemon.conf_dir)
        self.orphaned_buffers = found

    def is_loop_healthy(self) -> bool:
        """For the watchdog: the loop waits for events regularly, or is inside a bounded action."""
        thread = self._loop_thread
        if thread is None or not thread.is_alive():
            return False
        now = time.monotonic()
        return now - self._loop_beat < LOOP_STALL or now < max(self._busy_until, busy_until())

    def _longest_drain(self) -> float:
        with self.slots_lock:
            timeouts = [slot.drain_timeout for slot in self.slots.values()]
        return max(timeouts, default=self.settings.daemon.drain_timeout)

    # -- stop -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        if not self._stopping:  # normally request_stop() already said so
            self._stopping = True
            self.notifier.stopping()
        with self.slots_lock:
            slots = list(self.slots.values())
        log.info("stopping: draining %d pipeline(s)", len(slots))
        self._busy_until = time.monotonic() + self._longest_drain() + 60
        drain_all(slots, self._longest_drain())
        log.info("stopped")

    # -- Control: daemon ---------------------------------------------------------------------
    def is_stopping(self) -> bool:
        return self._stopping

    def is_ready(self) -> bool:
        return self._ready and not self._reloading_all and not self._stopping

    def reload(self) -> dict[str, Any]:
        if self._stopping:
            raise Unavailable("the daemon is stopping")
        return self.await_reload(self.request_reload("api"))

    def await_reload(self, reply: Future[dict[str, Any]]) -> dict[str, Any]:
        """Wait for a requested reload; Unavailable if the loop ended before handling it."""
        while True:
            try:
                return reply.result(timeout=LOOP_TICK)
            except FutureTimeout:
                if self._loop_ended.is_set() and not reply.done():
                    raise Unavailable("the daemon is stopping") from None

    def status_line(self) -> str:
        with self.slots_lock:
            slots = list(self.slots.values())
        counts: dict[str, int] = {}
        for slot in slots:
            counts[slot.state] = counts.get(slot.state, 0) + 1
        running = counts.pop("running", 0)
        parts = [f"{running} pipeline{'s' if running != 1 else ''} running"]
        parts += [f"{n} {state}" for state, n in sorted(counts.items())]
        return ", ".join(parts) + f", {_human_rate(self._items_per_second(slots))} items/s"

    def _items_per_second(self, slots: list[PipelineSlot]) -> float:
        total = 0.0
        for slot in slots:
            try:
                stages = slot.stats().get("stages", {})
            except Exception:  # noqa: BLE001 - a status line is best effort
                continue
            total += max((float(s.get("throughput_per_s") or 0.0) for s in stages.values()), default=0.0)
        return total


def freeze_startup_objects() -> None:
    """Once, after the first apply: collect, then move every object alive now (Litestar, uvicorn,
    the first versions' code) out of the collector's reach, so full collections stop rescanning
    them (docs/performance.md). They are still freed by reference counting; only garbage
    cycles among them (e.g. the modules of a first version that a reload replaces) are kept."""
    gc.collect()
    gc.freeze()


def _human_rate(rate: float) -> str:
    if rate >= 1_000_000:
        return f"{rate / 1_000_000:.1f}M"
    if rate >= 1000:
        return f"{rate / 1000:.1f}k"
    return f"{rate:.0f}" if rate >= 10 or rate == 0 else f"{rate:.1f}"
