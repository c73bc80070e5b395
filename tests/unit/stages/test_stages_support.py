"""Where relative paths of built-in stages resolve, and duration arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelined.stages._support import resolve_path, state_dir, to_seconds


def test_state_dir_prefers_the_daemons_export_then_systemd_then_dot_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PIPELINED_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert state_dir() == Path(".state")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pipelined:/var/lib/other")
    assert state_dir() == Path("/var/lib/pipelined")
    monkeypatch.setenv("PIPELINED_STATE_DIR", "/srv/state")
    assert state_dir() == Path("/srv/state")


def test_relative_paths_resolve_against_the_state_dir(state_dir: Path) -> None:
    assert resolve_path("out/x.jsonl", "path", "p/s (write_jsonl)") == state_dir / "out" / "x.jsonl"
    assert resolve_path("/abs/x", "path", "here") == Path("/abs/x")
    assert resolve_path("~/x", "path", "here") == state_dir / "~" / "x"  # never the home directory
    assert resolve_path("out/../../x", "path", "here") == state_dir.parent / "x"  # confined later
    with pytest.raises(TypeError, match="here: path: expected a non-empty path string, got 3"):
        resolve_path(3, "path", "here")  # type: ignore[arg-type]


def test_durations_accept_numbers_and_unit_strings() -> None:
    assert [to_seconds(v, "k", "here") for v in (2, 0.5, "250ms", "5s", "2m", "1h")] == [
        2,
        0.5,
        0.25,
        5,
        120,
        3600,
    ]
    with pytest.raises(ValueError, match="here: k: "):
        to_seconds(True, "k", "here")
