"""The tree of daemon/pipelined/ stays what docs/architecture.md says it is: every module (and
web-page file) is named in its module table and every name there exists; no module is longer
than MAX_LINES (docs/architecture.md, Modules; the developers' guide: "modules < ~400 lines")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "daemon" / "pipelined"
ARCHITECTURE = REPO / "docs" / "architecture.md"
MAX_LINES = 400
# Modules allowed over MAX_LINES, each with its ceiling (none since session 3 split the last).
KNOWN_LONG: dict[str, int] = {}


def package_files() -> list[str]:
    files = [p for p in PACKAGE_DIR.rglob("*") if p.suffix in (".py", ".js") and "__pycache__" not in p.parts]
    return sorted(str(p.relative_to(PACKAGE_DIR)) for p in files)


def module_table() -> list[tuple[str, str]]:
    """(first cell, second cell) of each row of the "## Modules" table."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Modules") :]
    section = section[: section.index("\n\n", section.index("|"))]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 4 and cells[1] not in ("module", "---"):
            rows.append((cells[1], cells[2]))
    return rows


def named_in_table() -> dict[str, str]:
    """Every file the table names → the row naming it. A first cell names files (`config/load.py`)
    or a package (`workers/`) whose files the second cell lists by bare name (`pool.py`)."""
    named: dict[str, str] = {}
    for first, second in module_table():
        for name in re.findall(r"`([\w/.]+\.(?:py|js))`", first):
            named[name] = first
        for package in re.findall(r"`([\w/]+/)`", first):
            for name in re.findall(r"`([\w/.]+\.(?:py|js))`", second):
                candidates = [package + name, package + "ui_assets/" + name]
                found = [c for c in candidates if (PACKAGE_DIR / c).exists()]
                named[found[0] if found else package + name] = first
    return named


def test_every_module_is_in_the_architecture_table() -> None:
    named = named_in_table()
    missing = [f for f in package_files() if f not in named and not f.endswith("/__init__.py")]
    assert not missing, f"modules missing from docs/architecture.md's module table: {missing}"


def test_every_module_the_table_names_exists() -> None:
    gone = sorted(name for name in named_in_table() if not (PACKAGE_DIR / name).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


@pytest.mark.parametrize("relative", package_files())
def test_no_module_is_longer_than_400_lines(relative: str) -> None:
    lines = len((PACKAGE_DIR / relative).read_text().splitlines())
    ceiling = KNOWN_LONG.get(relative, MAX_LINES)
    assert lines <= ceiling, f"daemon/pipelined/{relative}: {lines} lines (at most {ceiling}): split it by concern"


def test_the_table_reader_sees_rows_and_packages() -> None:
    named = named_in_table()
    assert named["config/load.py"] == "`config/load.py`" and named["workers/pool.py"] == "`workers/`"
    assert named["api/ui_assets/graph.js"] == "`api/`"


def test_test_modules_have_unique_basenames() -> None:
    """pytest's default (prepend) import mode imports every test module by its basename: two
    test_x.py in different folders make the whole run stop at collection (CI, session 2)."""
    seen: dict[str, str] = {}
    clashes = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        rel = str(path.relative_to(REPO))
        if path.name in seen:
            clashes.append(f"{seen[path.name]} and {rel}")
        seen.setdefault(path.name, rel)
    assert not clashes, "test modules sharing a basename: " + "; ".join(clashes)
