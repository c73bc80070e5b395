"""A re-scan of the conf dir, mixed into `Supervisor` (supervisor/loop.py): every file diffed
against its slot, one pipeline at a time; the changes applied in parallel.

- unchanged content key → nothing (a failed edit keeps its error; a file back to what runs
  only clears it; a `.py` change none of its imported files saw → nothing);
- changed → `reload.prepare` (parse, validate, route, before anything running is touched), loops
  across links refused (`linkplan`), then `reload.apply_change` per pipeline: removals and
  changes in parallel; new pipelines listed at once ("starting"), their budgets reserved one by
  one in name order, then started `START_PARALLEL` at a time behind their swap gates.
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor

from pipelined.config.settings import Settings
from pipelined.engine.book import PipelineBook
from pipelined.graph import limits
from pipelined.supervisor import linkplan
from pipelined.supervisor import reload as reloading
from pipelined.supervisor.links import LinkRouter
from pipelined.supervisor.reload import ReloadResult
from pipelined.supervisor.slot import PipelineSlot

log = logging.getLogger("pipelined.supervisor")

START_PARALLEL = 8  # new pipelines started at once (after reserving their budgets in name order)


class PipelineReloads:
    settings: Settings
    slots: dict[str, PipelineSlot]
    slots_lock: threading.RLock
    budget: limits.DaemonBudget
    links: LinkRouter
    invalid_files: dict[str, str]
    used_code: dict[str, dict[str, str]]  # per pipeline: {file: sha256} its version imported

    @abstractmethod
    def _announce_reloading(self) -> None:
        """RELOADING=1 once per reload: the loop's (supervisor/loop.py)."""

    def reload_all(self) -> ReloadResult:
        with reloading.scan_memo():  # code under a shared python_path is hashed once per re-scan
            return self._reload_all()

    def _reload_all(self) -> ReloadResult:
        result = ReloadResult()
        conf_dir = self.settings.daemon.conf_dir
        files, bad_names = reloading.scan_conf_dir(conf_dir)
        for file_name, error in bad_names.items():
            if self.invalid_files.get(file_name) != error:
                log.error("%s", error)
        self.invalid_files = bad_names
        result.failed.update(bad_names)
        with self.slots_lock:
            removed = [self.slots[name] for name in self.slots if name not in files]
        prepared: list[tuple[reloading.Prepared, bool]] = []
        for name, path in files.items():
            slot = self.slots.get(name)
            keyed = reloading.content_key(path)
            if keyed is None:
                continue
            if slot is not None and slot.seen_key == keyed[0]:
                if slot.pending_error and slot.error:
                    result.failed[name] = slot.error
                else:
                    result.unchanged.append(name)
                continue
            if slot is not None and reloading.back_to_running(slot, keyed[0], keyed[1]):
                result.unchanged.append(name)
                continue
            if self._code_change_not_theirs(slot, keyed[0]):
                result.unchanged.append(name)
                continue
            previous_dirs = slot.version.spec.python_path if slot and slot.version else ()
            ready = reloading.prepare(name, path, previous_dirs, keyed)
            if ready is not None:
                prepared.append((ready, slot is None))
        with self.slots_lock:
            current = linkplan.running_links(self.slots.values(), {slot.name for slot in removed})
        prepared = linkplan.refuse_loops(prepared, current)
        linkplan.log_warnings([ready for ready, _ in prepared], linkplan.after_reload(current, prepared))
        self._apply_in_parallel(prepared, removed, result)
        return result

    def _slot_or_none(self, name: str) -> PipelineSlot | None:
        with self.slots_lock:
            return self.slots.get(name)

    def _code_change_not_theirs(self, slot: PipelineSlot | None, key: tuple[str, str]) -> bool:
        """Only `.py` files changed, and none of those this pipeline's version imported."""
        if slot is None or slot.seen_key is None or slot.pending_error or slot.seen_key[0] != key[0]:
            return False
        if not reloading.same_code(self.used_code.get(slot.name)):
            return False
        if slot.running_key == slot.seen_key:
            slot.running_key = key
        slot.seen_key = key
        return True

    def _apply_in_parallel(
        self, prepared: list[tuple[reloading.Prepared, bool]], removed: list[PipelineSlot], result: ReloadResult
    ) -> None:
        """Removals and changes (which drain first) run in parallel. New pipelines reserve their
        share of the daemon's budget one by one in name order (a predictable order), then start
        in parallel (START_PARALLEL at a time): a thousand pipelines start in seconds. Pipelines
        that others link to are handed to the starters first; until its start is done, a new
        pipeline's gate holds triggers and link deliveries (≤ 10 s), as a swap does."""
        if not prepared and not removed:
            return
        self._announce_reloading()  # a watcher event that changes something
        fresh = sorted((ready for ready, is_new in prepared if is_new), key=lambda ready: ready.name)
        changed = [ready for ready, is_new in prepared if not is_new]
        with self.slots_lock:  # listed at once (state "starting") while they wait their turn
            for ready in fresh:
                if ready.name not in self.slots:
                    self.slots[ready.name] = self._new_slot(ready)
                    self.slots[ready.name].begin_swap()  # triggers and links wait (≤ 10 s)
        for ready in fresh:
            self._reserve(ready)
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(changed) + len(removed))),
                                thread_name_prefix="pipelined-apply") as pool, \
                ThreadPoolExecutor(max_workers=max(1, min(START_PARALLEL, len(fresh))),
                                   thread_name_prefix="pipelined-start") as starting:  # fmt: skip
            removals = {pool.submit(reloading.remove, slot): slot for slot in removed}
            changes = {pool.submit(self._apply_one, ready, False): ready for ready in changed}
            starts = {starting.submit(self._start_fresh, ready): ready for ready in linkplan.start_order(fresh)}
            for start, ready in starts.items():
                self._record(result, ready.name, start.result())
                self.slots[ready.name].release_reservation()
            for removal, slot in removals.items():
                removal.result()
                with self.slots_lock:
                    self.slots.pop(slot.name, None)
                self.used_code.pop(slot.name, None)
                slot.book.close()
                result.removed.append(slot.name)
            for change, ready in changes.items():
                self._record(result, ready.name, change.result())

    def _start_fresh(self, ready: reloading.Prepared) -> str:
        try:
            return self._apply_one(ready, True)
        finally:
            self.slots[ready.name].end_swap()

    def _reserve(self, ready: reloading.Prepared) -> None:
        version = ready.version
        slot = self.slots.get(ready.name)
        if slot is None or version is None or not version.spec.enabled:
            return
        try:
            with slot.lock:
                slot.reserve(version)
        except Exception:  # noqa: BLE001 - its start (which allocates again) reports the error
            log.debug("%s: reserving its budget failed", ready.name, exc_info=True, extra={"pipeline": ready.name})

    def _record(self, result: ReloadResult, name: str, outcome: str) -> None:
        if outcome == "failed":
            result.failed[name] = self.slots[name].error or "failed"
        else:
            getattr(result, outcome).append(name)

    def _apply_one(self, ready: reloading.Prepared, is_new: bool) -> str:
        with self.slots_lock:
            slot = self.slots.get(ready.name)
            if slot is None:
                slot = self._new_slot(ready)
                self.slots[ready.name] = slot
        try:
            outcome = reloading.apply_change(slot, ready, is_new)
            if outcome != "failed":
                self.used_code[ready.name] = ready.used_code or {}
            return outcome
        except Exception as exc:  # noqa: BLE001 - one pipeline's bug fails only that pipeline
            log.exception("%s: applying the change failed", ready.name, extra={"pipeline": ready.name})
            slot.record_reload(False, f"{type(exc).__name__}: {exc}")
            return "failed"

    def _new_slot(self, ready: reloading.Prepared) -> PipelineSlot:
        daemon = self.settings.daemon
        book = PipelineBook(ready.name, daemon.state_dir, dead_letter_files=daemon.dead_letter_files)
        slot = PipelineSlot(ready.name, ready.path, book, self.budget, daemon.drain_timeout, self.links)
        slot.file_version = ready.file_version  # shown (state "starting") before it starts
        slot.version = ready.version  # None when the file is invalid
        return slot
