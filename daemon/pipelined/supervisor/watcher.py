"""Watch the conf dir (and the pipelines' `python_path` dirs) and ask for a reload after quiet.

watchfiles groups events until nothing changed for `quiet_ms` (about 200 ms), so an editor's
temp-file-and-rename, `sed -i`, vim's `4913` probe and bursts of saves become one reload, which
re-scans the directory (the supervisor's reload is keyed by content, so it is cheap). The wait
has a maximum: a file that keeps changing (written every 50 ms) is reloaded at the latest about
`MAX_WAIT_MS` (2 s) after its first change, and again after each further such period. Only
`*.toml` pipeline files and `*.py` files matter. The set of watched directories follows the
loaded pipelines (`refresh()`); a watcher error is logged and watching restarts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import watchfiles

log = logging.getLogger("pipelined.watcher")

QUIET_MS = 200
STEP_MS = 50
MAX_GROUP_MS = 500  # watchfiles yields a group of changes at least this often
MAX_WAIT_MS = 2000  # from the first change to the reload, however busy the files stay
RETRY_SECONDS = 1.0
IDENTITY_CHECK_S = 0.5  # how often the watched directories are checked for having been replaced


def is_relevant(path: str) -> bool:
    name = Path(path).name
    if name.startswith((".", "_")) and name.endswith(".toml"):
        return False
    return name.endswith(".toml") or (name.endswith(".py") and not name.startswith(".#"))


class ConfWatcher:
    def __init__(
        self,
        directories: Callable[[], Iterable[Path]],
        on_change: Callable[[set[str]], object],
        quiet_ms: int = QUIET_MS,
    ) -> None:
        self.directories = directories
        self.on_change = on_change
        self.quiet_ms = quiet_ms
        self._stop = threading.Event()
        self._wake = threading.Event()  # stop, or the watched directories changed
        self._watching: frozenset[Path] = frozenset()
        self._thread = threading.Thread(target=self._run, name="pipelined-watcher", daemon=True)
        self.ready = threading.Event()  # set once the first watch is set up (tests, bench)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def refresh(self) -> None:
        """Re-read the directories to watch; restart watching if they changed."""
        if self._existing() != self._watching:
            self._wake.set()

    def _existing(self) -> frozenset[Path]:
        return frozenset(p.resolve() for p in self.directories() if p.is_dir())

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            self._wake.clear()
            self._watching = self._existing()
            if not self._watching:
                self.ready.set()
                first = False  # a conf dir created later may arrive with files in it: re-scan then
                self._wake.wait(RETRY_SECONDS)
                continue
            try:
                # after a restart, re-scan once: a change made while no watch was set up is not lost
                self._watch(self._watching, rescan=not first)
                first = False
            except Exception:  # noqa: BLE001 - keep watching whatever went wrong
                log.exception("watching %s failed; retrying", sorted(map(str, self._watching)))
                self._stop.wait(RETRY_SECONDS)

    def _watch(self, directories: frozenset[Path], rescan: bool) -> None:
        """watchfiles groups events until `STEP_MS` pass without one; this loop then waits until
        `quiet_ms` passed since the last group before asking for a reload."""
        log.debug("watching %s", sorted(map(str, directories)))
        changes_iter = watchfiles.watch(
            *sorted(directories),
            watch_filter=lambda _change, path: is_relevant(path),
            debounce=MAX_GROUP_MS,
            step=STEP_MS,
            stop_event=self._wake,
            rust_timeout=STEP_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
        )
        pending: set[str] = set()
        last_event = 0.0
        first_seen = 0.0  # when the oldest pending change was seen
        identity, checked = _identities(directories), time.monotonic()
        for changes in changes_iter:
            self.ready.set()
            if rescan:
                self.on_change(set())
                rescan = False
            now = time.monotonic()
            if changes:
                if not pending:  # the group may have begun up to MAX_GROUP_MS ago
                    first_seen = now - MAX_GROUP_MS / 1000
                pending.update(path for _change, path in changes)
                last_event = now - STEP_MS / 1000  # the group ended one quiet step ago
            if pending and (
                now - last_event >= self.quiet_ms / 1000 or now - first_seen >= MAX_WAIT_MS / 1000
            ):
                log.debug("changed: %s", sorted(pending))
                self.on_change(pending)
                pending = set()
            if self._wake.is_set():
                if pending:
                    self.on_change(pending)
                return
            if now - checked >= IDENTITY_CHECK_S:
                checked = now
                if _identities(directories) != identity or self._existing() != directories:
                    # a directory was swapped (`mv conf.d.new conf.d`, a symlink re-pointed): the
                    # watch follows the old one; watch again and re-scan (_run does both)
                    log.info("watched directories were replaced; watching them again")
                    if pending:
                        self.on_change(pending)
                    return


def _identities(directories: frozenset[Path]) -> dict[Path, tuple[int, int] | None]:
    """(device, inode) of each directory now, None when it is gone."""
    found: dict[Path, tuple[int, int] | None] = {}
    for directory in directories:
        try:
            st = os.stat(directory)
        except OSError:
            found[directory] = None
            continue
        found[directory] = (st.st_dev, st.st_ino)
    return found
