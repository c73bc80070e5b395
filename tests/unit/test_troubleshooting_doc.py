"""docs/operations.md's troubleshooting table lists every refusal that stops the daemon or a
pipeline because of who may write (or read) what, with the words the message really has: an
operator greps the table for the line the daemon printed."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "daemon" / "pipelined"

# (words of the message as the table has them, the module that says them, as its source has them)
REFUSALS = [
    ("is writable by", "config/permissions.py", "is writable by"),  # pipeline file, dirs, python_path
    ("is owned by", "config/permissions.py", "is owned by"),  # ... owned by another user (chown)
    ("refused: the settings file", "config/settings.py", '"the settings file"'),  # exit 2
    ("state_dir: refused", "host/run.py", "state_dir: refused"),  # exit 2
    ("[api]: token_file", "config/secrets.py", "[api]: token_file"),  # exit 2
    ("is readable or writable by group or others", "config/secrets.py", "is readable or writable by group or others"),
    ("refusing a secret another user controls", "config/secrets.py", "refusing a secret another user controls"),
    ("who could replace the socket", "api/server.py", "who could replace the"),  # exit 3
]


def troubleshooting_table() -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Troubleshooting", 1)[1]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


@pytest.mark.parametrize(("words", "module", "source"), REFUSALS)
def test_every_refusal_has_a_row(words: str, module: str, source: str) -> None:
    assert source in (PACKAGE_DIR / module).read_text(), f"{module} no longer says {source!r}: update this list"
    assert words in troubleshooting_table(), f"docs/operations.md, Troubleshooting: no row for {words!r}"
