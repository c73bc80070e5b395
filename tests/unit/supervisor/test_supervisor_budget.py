"""The daemon-wide budget (config.md, Limits): pipelines take from `[daemon] max_processes` in the
order they start, and a running pipeline is never rescaled. In-process supervisor, real worker
processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelined.supervisor.loop import Supervisor

TWO_PROCESSES = """
[[stage]]
name = "work"
call = "pipelined.stages:log"
processes = 2
{extra}
"""


@pytest.fixture
def supervisor(make_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return make_supervisor(max_processes=3)


def processes(supervisor: Supervisor, name: str) -> int:
    return int(supervisor.pipeline(name)["stages"][0]["processes"])


def test_a_fresh_pipeline_keeps_what_it_reserved_so_the_next_one_gets_what_is_left(
    supervisor: Supervisor, conf: Path
) -> None:
    (conf / "first.toml").write_text(TWO_PROCESSES.format(extra=""))
    assert supervisor.reload_all().added == ["first"]
    assert processes(supervisor, "first") == 2
    assert supervisor.budget.held("first")[1] == 2  # the start kept its reservation
    (conf / "second.toml").write_text(TWO_PROCESSES.format(extra=""))
    assert supervisor.reload_all().added == ["second"]
    assert processes(supervisor, "second") == 1  # 3 - 2
    assert processes(supervisor, "first") == 2  # never rescaled
    assert supervisor.budget.remaining()[1] == 0


def test_a_reloaded_pipeline_gives_back_and_takes_again_without_rescaling_the_others(
    supervisor: Supervisor, conf: Path
) -> None:
    (conf / "first.toml").write_text(TWO_PROCESSES.format(extra=""))
    (conf / "second.toml").write_text(TWO_PROCESSES.format(extra=""))
    assert sorted(supervisor.reload_all().added) == ["first", "second"]
    assert (processes(supervisor, "first"), processes(supervisor, "second")) == (2, 1)  # name order
    (conf / "second.toml").write_text("description = \"v2\"\n" + TWO_PROCESSES.format(extra=""))
    assert supervisor.reload_all().updated == ["second"]
    assert (processes(supervisor, "first"), processes(supervisor, "second")) == (2, 1)
    assert supervisor.budget.held("second")[1] == 1
    (conf / "first.toml").unlink()
    assert supervisor.reload_all().removed == ["first"]
    assert supervisor.budget.held("first") == (0, 0)
    assert processes(supervisor, "second") == 1  # not rescaled upwards either
