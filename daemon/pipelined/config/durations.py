"""Human-friendly durations and sizes: `"250ms"`, `"5s"`, `"2m"`, `"1h"` → seconds; `"1MiB"` → bytes.

    parse_duration("250ms") == 0.25      parse_duration(5) == 5.0
    parse_size("1MiB") == 1048576        parse_size("10KB") == 10000

Both raise ValueError with a message that quotes the bad value and says what is accepted.
"""

from __future__ import annotations

import math
import re

DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}

_NUMBER_WITH_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")
DURATION_HELP = 'a duration like "250ms", "5s", "2m", "1h" or a number of seconds'
SIZE_HELP = 'a size like "512KiB", "1MiB", "10MB", "1GiB" or a number of bytes'


def parse_duration(value: object) -> float:
    """Seconds (>= 0) from a number of seconds or a string with a unit (ms, s, m, h)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {DURATION_HELP}, got {type(value).__name__} {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _NUMBER_WITH_UNIT.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in DURATION_UNITS and unit != "":
            raise ValueError(f"invalid duration {value!r}: expected {DURATION_HELP}")
        seconds = float(match.group(1)) * DURATION_UNITS.get(unit, 1.0)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def parse_size(value: object) -> int:
    """Bytes (>= 0) from an integer or a string with a unit (B, KB/KiB, MB/MiB, GB/GiB)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected {SIZE_HELP}, got {type(value).__name__} {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _NUMBER_WITH_UNIT.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in SIZE_UNITS and unit != "":
            raise ValueError(f"invalid size {value!r}: expected {SIZE_HELP}")
        size = int(float(match.group(1)) * SIZE_UNITS.get(unit, 1))
    if size < 0:
        raise ValueError(f"invalid size {value!r}: must be >= 0")
    return size
