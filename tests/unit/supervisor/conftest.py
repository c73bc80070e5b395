"""What the supervisor's unit tests share: an empty conf dir, and Supervisors over it that are
shut down (every pipeline they started drained) when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.settings import Settings
from pipelined.supervisor.control import Notifier
from pipelined.supervisor.loop import Supervisor


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    return conf_dir


@pytest.fixture
def make_supervisor(tmp_path: Path, conf: Path) -> Iterator[Callable[..., Supervisor]]:
    """`make_supervisor(notifier=None, **settings)`: a Supervisor on `conf` with its state dir in
    tmp_path and drain_timeout 5 s unless given."""
    made: list[Supervisor] = []

    def make(notifier: Notifier | None = None, **overrides: Any) -> Supervisor:
        overrides = {"conf_dir": conf, "state_dir": tmp_path / "state", "drain_timeout": 5.0, **overrides}
        made.append(Supervisor(Settings().with_overrides(**overrides), notifier))
        return made[-1]

    try:
        yield make
    finally:
        for sup in made:
            sup._shutdown()  # drains every pipeline it started
