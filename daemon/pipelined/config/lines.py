"""Where things are in a TOML file's text: line numbers of table headers and keys.

tomllib gives values without positions, so problems find their line here by scanning the raw
text once. Tables are addressed by *resolved paths* in which every array-of-tables step carries
its index: the 2nd `[[stage]]` is `("stage", 1)`, the first `[[stage.stage]]` inside it is
`("stage", 1, "stage", 0)`, its `[stage.stage.hooks]` is `("stage", 1, "stage", 0, "hooks")`, and
the top-level table is `()`.

    index = LineIndex.scan(text)
    index.table_line(("stage", 1))           # line of the 2nd `[[stage]]` header
    index.key_line(("stage", 1), "threads")   # line of `threads = ...` inside it (or None)

The scan understands comments, quoted keys, dotted keys (`hooks.on_error = ...` also records
`hooks`) and skips the inside of multi-line strings. A multi-line array of inline tables, one per
line (what tomli-w writes for `[[stage]]` lists, e.g. from a JSON API body), records each element
as a table with the keys on its line. Other inline tables fall back to the line of their key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TablePath = tuple[str | int, ...]

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_SPLIT_PART = re.compile(_KEY_PART)
_INLINE_KEY = re.compile(rf"(?:^|[{{,])\s*({_KEY_PART})\s*=")


def _key_parts(dotted: str) -> list[str]:
    parts = []
    for raw in _SPLIT_PART.findall(dotted):
        parts.append(raw[1:-1] if raw[:1] in "\"'" else raw)
    return parts


@dataclass
class LineIndex:
    tables: dict[TablePath, int] = field(default_factory=dict)
    keys: dict[tuple[TablePath, str], int] = field(default_factory=dict)
    array_counts: dict[TablePath, int] = field(default_factory=dict)

    @classmethod
    def scan(cls, text: str) -> LineIndex:
        index = cls()
        current: TablePath = ()
        in_multiline: str | None = None
        inline_array: TablePath | None = None  # the key path of an open multi-line array
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            if inline_array is not None:
                inline_array = index._inline_element(inline_array, line, number)
                continue
            header = _HEADER.match(line)
            if header:
                current = index._open_table(_key_parts(header.group(2)), header.group(1) == "[[", number)
                continue
            key = _KEY_LINE.match(line)
            if key:
                parts = _key_parts(key.group(1))
                index._record_key(current, parts, number)
                rest = line[key.end() :]
                if rest.split("#")[0].strip() == "[":
                    inline_array = (*current, *parts)
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_multiline = quote
                        break
        return index

    def _open_table(self, parts: list[str], is_array: bool, number: int) -> TablePath:
        resolved: list[str | int] = []
        for position, part in enumerate(parts):
            resolved.append(part)
            last = position == len(parts) - 1
            key = tuple(resolved)
            if last and is_array:
                count = self.array_counts.get(key, 0)
                self.array_counts[key] = count + 1
                resolved.append(count)
            elif key in self.array_counts:
                resolved.append(self.array_counts[key] - 1)
        path = tuple(resolved)
        self.tables.setdefault(path, number)
        return path

    def _inline_element(self, array: TablePath, line: str, number: int) -> TablePath | None:
        """One line inside a multi-line array: an element `{ ... }` is recorded; `]` ends it."""
        stripped = line.strip()
        if stripped.startswith("]"):
            return None
        if stripped.startswith("{"):
            element = (*array, self.array_counts.get(array, 0))
            self.array_counts[array] = element[-1] + 1  # type: ignore[operator]
            self.tables.setdefault(element, number)
            for raw in _INLINE_KEY.findall(stripped):
                self.keys.setdefault((element, _key_parts(raw)[0]), number)
        return array

    def _record_key(self, table: TablePath, parts: list[str], number: int) -> None:
        path = table
        for part in parts:
            self.keys.setdefault((path, part), number)
            path = (*path, part)

    def table_line(self, path: TablePath) -> int | None:
        """Line of the header that opens this table (None for the top level or if unknown)."""
        return self.tables.get(path)

    def key_line(self, table: TablePath, key: str) -> int | None:
        """Line of `key = ...` directly inside `table`, else None."""
        return self.keys.get((table, key))

    def line_for(self, table: TablePath, key: str | None = None) -> int | None:
        """The key's line if known, else the nearest enclosing table header's line."""
        if key is not None:
            found = self.key_line(table, key)
            if found is not None:
                return found
        path = table
        while path:
            found = self.table_line(path)
            if found is not None:
                return found
            # a sub-table written inline or as dotted keys: its key line inside the parent
            parent, last = path[:-1], path[-1]
            if isinstance(last, str):
                found = self.key_line(parent, last)
                if found is not None:
                    return found
            path = parent
        return None
