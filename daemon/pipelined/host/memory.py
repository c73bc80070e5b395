"""Give big freed buffers back to the system (glibc's malloc).

glibc serves an allocation above its mmap threshold with its own mapping, which `free()`
unmaps at once — but it *raises* that threshold to the size of every such block freed (up to
32 MiB), so after one 20 MB item is freed the next ones come from the heap, whose free space
stays in the process: four dead-lettered 20 MB items left ~100 MB of RSS for good. Setting the
threshold explicitly (1 MiB here) switches that adjustment off: buffers of 1 MiB and more
always get their own mapping and always go back when freed. Smaller allocations are not
affected. Worker processes forked from the daemon inherit the setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("pipelined.daemon")

M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_big_buffers_to_the_system(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """True when glibc took the setting (False elsewhere, e.g. musl: nothing to do there)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not taken:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) was refused", threshold)
    return taken
