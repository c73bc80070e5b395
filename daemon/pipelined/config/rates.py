"""Stage keys `rate_limit`, `concurrency` and `priority` (docs/config.md, Rate limits and priorities).

    parse_rate("10/s") == RateLimit(10, 1.0, "10/s")     parse_rate("600/min").per_second == 10.0

`rate_limit` and `concurrency` apply to processors and consumers (the stages whose calls take
items); `priority` to producers (the priority of the runs they start). The pipeline key
`priority_max_wait` is read with the other pipeline keys (config/load.py).
"""

from __future__ import annotations

import re
from dataclasses import replace

from pipelined.config.spec import RateLimit, StageSpec
from pipelined.config.values import Checker, Table, describe, read_int

PRIORITY_MIN = -10
PRIORITY_MAX = 10
PERIODS: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0}
MAX_RATE_COUNT = 10**12  # calls per period; more limits nothing (and must still fit a float)
RATE_HELP = 'a rate like "10/s", "600/min" or "5000/h" (an integer >= 1 per s, min or h)'
_RATE = re.compile(r"^\s*([0-9]+)\s*/\s*([A-Za-z]+)\s*$")
_PERIOD_HINTS = {"m": "min", "sec": "s", "second": "s", "minute": "min", "hour": "h", "hr": "h"}


def parse_rate(value: object) -> RateLimit:
    """A `RateLimit` from `"N/s"`, `"N/min"` or `"N/h"`; ValueError saying what is accepted."""
    if not isinstance(value, str):
        raise ValueError(f"must be {RATE_HELP}, got {describe(value)}")
    match = _RATE.match(value)
    if match is None:
        raise ValueError(f"must be {RATE_HELP}, got {describe(value)}")
    digits, unit = match.group(1).lstrip("0") or "0", match.group(2).lower()
    if len(digits) > len(str(MAX_RATE_COUNT)) or int(digits) > MAX_RATE_COUNT:
        raise ValueError(
            f"must be {RATE_HELP}, got {describe(value)} (at most {MAX_RATE_COUNT} calls per period; "
            "leave rate_limit out for no limit)"
        )
    count = int(digits)
    if unit not in PERIODS:
        hint = _PERIOD_HINTS.get(unit)
        better = f' (did you mean "{count}/{hint}"?)' if hint else ""
        raise ValueError(f"must be {RATE_HELP}, got {describe(value)}{better}")
    if count < 1:
        raise ValueError(f"must be {RATE_HELP}, got {describe(value)} (0 calls would never call the stage)")
    return RateLimit(count, PERIODS[unit], f"{count}/{unit}")


def read_priority(ck: Checker, table: Table, key: str = "priority") -> int | None:
    value = table.data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        ck.report(
            table.at(key),
            f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, got {describe(value)}",
            table.path,
            key,
        )
        return None
    return value


def read_rate_keys(ck: Checker, table: Table, spec: StageSpec) -> StageSpec:
    """`spec` with its rate_limit, concurrency and priority (kind rules are checked by the caller)."""
    rate: RateLimit | None = None
    if "rate_limit" in table.data:
        try:
            rate = parse_rate(table.data["rate_limit"])
        except ValueError as exc:
            ck.report(table.at("rate_limit"), str(exc), table.path, "rate_limit")
    concurrency = read_int(ck, table, "concurrency", 1)
    priority = read_priority(ck, table)
    return replace(spec, rate_limit=rate, concurrency=concurrency, priority=priority or 0)
