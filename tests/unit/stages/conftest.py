"""Fixtures for the built-in stage tests: a fake `ctx` and a per-test state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stages_fake_context import FakeContext


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "state"
    monkeypatch.setenv("PIPELINED_STATE_DIR", str(directory))
    yield directory
