"""A docstring that sends the reader to another module's name (`runtime's `_inject``,
`durable.py's `inject_durably``) names something that module still has: a rename or a move
leaves no stale pointer behind (the review found inject.py pointing at a `_inject` long gone)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "daemon" / "pipelined"
REFERENCE = re.compile(r"\b([a-z_]+)(?:\.py)?'s `([A-Za-z_][A-Za-z0-9_]*)")
NOT_CODE = {("engine/gate.py", "throttled_s")}  # "a stage's `throttled_s`": its stats field, not stage.py's


def references() -> list[tuple[str, str, str]]:
    """(referring module, referred module, name) for every `<sibling module>'s `name`` in the tree."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for owner, name in REFERENCE.findall(path.read_text()):
            sibling = path.parent / f"{owner}.py"
            referring = str(path.relative_to(PACKAGE_DIR))
            if sibling.is_file() and sibling != path and (referring, name) not in NOT_CODE:
                found.append((referring, str(sibling.relative_to(PACKAGE_DIR)), name))
    return found


def test_references_are_found() -> None:
    assert ("engine/inject.py", "engine/durable.py", "inject_durably") in references()


@pytest.mark.parametrize(("referring", "referred", "name"), references())
def test_a_docstring_names_what_the_other_module_has(referring: str, referred: str, name: str) -> None:
    text = (PACKAGE_DIR / referred).read_text()
    assert re.search(rf"\b{name}\b", text), f"daemon/pipelined/{referring} names {referred}'s `{name}`, not in it"
