"""Reading typed values out of parsed TOML tables while collecting every problem.

A `Checker` belongs to one file: it knows the file name, the pipeline name and the `LineIndex`,
and turns "this key in this table is wrong" into a `Problem` with the right `where` and line.
The `read_*` helpers return the value when it is valid, `None` when it is absent or invalid
(after reporting it), so the caller falls back to the default and carries on: one pass finds
every problem of a file.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelined.config.durations import DURATION_HELP, parse_duration
from pipelined.config.lines import LineIndex, TablePath
from pipelined.config.spec import Problem, Severity


@dataclass
class Checker:
    file: str
    pipeline: str
    lines: LineIndex
    problems: list[Problem] = field(default_factory=list)
    stage_tables: dict[str, TablePath] = field(default_factory=dict)  # stage name → its table

    def report(
        self,
        where: str,
        message: str,
        table: TablePath = (),
        key: str | None = None,
        severity: Severity = "error",
    ) -> None:
        line = self.lines.line_for(table, key)
        self.problems.append(Problem(self.file, where, message, line, severity))

    def warn(self, where: str, message: str, table: TablePath = (), key: str | None = None) -> None:
        self.report(where, message, table, key, "warning")

    @property
    def error_count(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error")


@dataclass(frozen=True)
class Table:
    """One TOML table being read: its data, its resolved path and its `where` prefix."""

    data: Mapping[str, Any]
    path: TablePath
    where: str

    def at(self, key: str) -> str:
        return f"{self.where}/{key}"


def describe(value: object) -> str:
    """A TOML-flavoured description of a value for messages: `string "4"`, `boolean true`."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'string "{value}"' if len(value) <= 40 else f'string "{value[:37]}..."'
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def suggestion(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def check_unknown_keys(
    ck: Checker, table: Table, allowed: Collection[str], elsewhere: Mapping[str, str] | None = None
) -> None:
    """Report keys not in `allowed`; `elsewhere` maps keys that belong in another table to a hint."""
    for key in table.data:
        if key in allowed:
            continue
        hint = (elsewhere or {}).get(key)
        why = f" ({hint})" if hint else suggestion(key, allowed)
        ck.report(table.at(key), f'unknown key "{key}"{why}', table.path, key)


def _wrong(ck: Checker, table: Table, key: str, expected: str) -> None:
    ck.report(table.at(key), f"must be {expected}, got {describe(table.data[key])}", table.path, key)


def read_int(ck: Checker, table: Table, key: str, minimum: int) -> int | None:
    value = table.data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _wrong(ck, table, key, f"an integer >= {minimum}")
        return None
    return value


def read_bool(ck: Checker, table: Table, key: str) -> bool | None:
    value = table.data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        _wrong(ck, table, key, "true or false")
        return None
    return value


def read_str(ck: Checker, table: Table, key: str) -> str | None:
    value = table.data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        _wrong(ck, table, key, "a string")
        return None
    return value


def read_choice(ck: Checker, table: Table, key: str, choices: Collection[str]) -> str | None:
    value = table.data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(f'"{c}"' for c in choices)
        hint = suggestion(value, choices) if isinstance(value, str) else ""
        ck.report(table.at(key), f"must be one of {listed}, got {describe(value)}{hint}", table.path, key)
        return None
    return value


def read_duration(ck: Checker, table: Table, key: str, *, positive: bool = False) -> float | None:
    value = table.data.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        _wrong(ck, table, key, DURATION_HELP)
        return None
    if positive and seconds <= 0:
        ck.report(table.at(key), f"must be a duration > 0, got {describe(value)}", table.path, key)
        return None
    return seconds


def read_str_list(
    ck: Checker, table: Table, key: str, *, non_empty_items: bool = True
) -> tuple[str, ...] | None:
    value = table.data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, str) and (v or not non_empty_items) for v in value
    ):
        _wrong(ck, table, key, "an array of non-empty strings")
        return None
    return tuple(value)


def read_table(ck: Checker, table: Table, key: str) -> Table | None:
    value = table.data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        _wrong(ck, table, key, "a table")
        return None
    return Table(value, (*table.path, key), table.at(key))


def read_weights(ck: Checker, table: Table, key: str) -> dict[str, int] | None:
    weights = read_table(ck, table, key)
    if weights is None:
        return None
    result: dict[str, int] = {}
    for name, weight in weights.data.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            ck.report(
                weights.at(name),
                f"weight must be a positive integer, got {describe(weight)}",
                weights.path,
                name,
            )
        else:
            result[name] = weight
    if not weights.data:
        ck.report(table.at(key), "must name at least one stage", table.path, key)
    return result
