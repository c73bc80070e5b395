"""Fixtures for the built-in stage tests: a fake `ctx`, a per-test state dir, tmp_path as the roots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stages_fake_context import FakeContext


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


@pytest.fixture(autouse=True)
def allowed_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Built-in stages read and write only under their roots: here, the test's tmp_path."""
    monkeypatch.setenv("PIPELINED_READ_PATHS", str(tmp_path))
    monkeypatch.setenv("PIPELINED_WRITE_PATHS", str(tmp_path))
    return tmp_path


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "state"
    monkeypatch.setenv("PIPELINED_STATE_DIR", str(directory))
    yield directory
