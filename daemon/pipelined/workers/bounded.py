"""Long waits with a known bound, for the daemon's watchdog (supervisor/loop.py, is_loop_healthy).

A reload counts as healthy for the longest drain plus a minute. Starting a Ray stage may take
longer and still end on its own: connecting (an embedded instance started, or `ray.init` against
a slow cluster) and starting actors each have their own timeout. While such a wait runs, the
loop is healthy until its bound, so systemd's watchdog does not kill the daemon for it.

    with bounded(CONNECT_TIMEOUT + START_TIMEOUT):
        stage.start()
    busy_until()        # the latest bound of the waits in progress (0.0 when there is none)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_until: dict[int, float] = {}
_ids = itertools.count()


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    key = next(_ids)
    with _lock:
        _until[key] = time.monotonic() + seconds
    try:
        yield
    finally:
        with _lock:
            _until.pop(key, None)


def busy_until() -> float:
    with _lock:
        return max(_until.values(), default=0.0)
