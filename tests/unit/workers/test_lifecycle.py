"""Hooks, StartError, logs coming back, and no processes left behind after stop."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.spec import Hooks
from pipelined.errors import StartError
from pipelined.workers import make_process_stage
from pipelined.workers.proctree import descendant_pids

from .conftest import make_spec, new_children

HOOKS = "wstages:"


def test_fork_hooks_run_in_order_in_the_right_processes(
    started: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_log = tmp_path / "hooks"
    monkeypatch.setenv("WSTAGES_HOOK_LOG", str(hook_log))
    record = tmp_path / "record"
    started(
        "Scorer",
        args={"record": str(record)},
        processes=2,
        pipeline_hooks=Hooks(before_fork=HOOKS + "pipeline_before_fork", after_fork=HOOKS + "pipeline_after_fork"),
        stage_hooks=Hooks(before_fork=HOOKS + "stage_before_fork", after_fork=HOOKS + "stage_after_fork"),
    )
    events = [line.split() for line in hook_log.read_text().splitlines()]
    assert [e[0] for e in events[:2]] == ["pipeline_before_fork", "stage_before_fork"]
    assert {int(e[1]) for e in events[:2]} == {os.getpid()}
    by_worker: dict[str, list[str]] = {}
    for event, pid, _threads in events[2:]:
        by_worker.setdefault(pid, []).append(event)
    assert len(by_worker) == 2 and str(os.getpid()) not in by_worker
    assert all(seq == ["pipeline_after_fork", "stage_after_fork"] for seq in by_worker.values())
    setups = [line.split()[1] for line in record.read_text().splitlines() if line.startswith("setup")]
    assert sorted(setups) == sorted(by_worker)  # setup() in the same workers, after their hooks


@pytest.mark.parametrize(
    ("call", "hooks", "expected"),
    [
        ("FailingSetup", Hooks(), "setup() failed in a worker process: RuntimeError: no model file"),
        ("double", Hooks(after_fork=HOOKS + "failing_hook"),
         "stage hook after_fork 'wstages:failing_hook' failed in a worker process: RuntimeError: hook exploded"),
        ("no_such_function", Hooks(), "import of 'wstages:no_such_function' failed in a worker process: "),
    ],
)
def test_start_error_names_stage_and_cause_and_leaves_no_process(call: str, hooks: Hooks, expected: str) -> None:
    pipeline, stage = make_spec(call, stage_hooks=hooks)
    process_stage = make_process_stage(pipeline, stage, 2)
    with pytest.raises(StartError) as caught:
        process_stage.start()
    assert "wtest/work" in str(caught.value) and expected in str(caught.value)
    assert process_stage.live_processes() == 0
    assert new_children() == []


def test_failing_before_fork_is_a_start_error() -> None:
    pipeline, stage = make_spec("double", pipeline_hooks=Hooks(before_fork=HOOKS + "failing_hook"))
    with pytest.raises(StartError, match="pipeline hook before_fork 'wstages:failing_hook' failed: RuntimeError"):
        make_process_stage(pipeline, stage, 1).start()
    assert new_children() == []


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_stop_leaves_no_zombie_or_orphan(method: str) -> None:
    pipeline, stage = make_spec("double", start_method=method)
    process_stage = make_process_stage(pipeline, stage, 2)
    process_stage.start()
    workers = [slot.worker.pid for slot in process_stage._slots]  # type: ignore[attr-defined]
    assert set(workers) <= set(descendant_pids(os.getpid()))
    process_stage.process("r", [1, 2, 3])
    process_stage.stop(5.0)
    assert process_stage.live_processes() == 0
    assert new_children() == []  # workers reaped; forkserver and resource tracker stopped too
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_stop_kills_a_worker_stuck_past_the_deadline(started: Any) -> None:
    import threading

    stage = started("slow", processes=1)
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.extend(stage.process("r", [60.0])))
    caller.start()
    deadline_check = __import__("time").monotonic()
    while stage._slots[0].worker.progress[0] != 0:  # type: ignore[attr-defined]
        assert __import__("time").monotonic() - deadline_check < 5
    stage.stop(0.5)
    caller.join(10)
    assert result[0].error is not None and "SIGKILL" in result[0].error
    assert new_children() == []
    assert stage.process("r", [1])[0].error.startswith("WorkerStopped")


def test_logs_come_back_with_pipeline_stage_and_run(started: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    started("log_item", processes=1).process("run-7", ["hello"])
    records = [r for r in caplog.records if "hello" in r.getMessage()]
    assert {r.getMessage() for r in records} == {"seen hello", "plain logger hello"}
    for record in records:
        assert (record.pipeline, record.stage, record.run) == ("wtest", "work", "run-7")  # type: ignore[attr-defined]
        assert record.process != os.getpid()


def test_sigterm_to_the_process_group_is_left_to_the_daemon(started: Any) -> None:
    import signal

    stage = started("pid_of", processes=1)
    pid = stage.process("r", [0])[0].outputs[0]
    os.kill(pid, signal.SIGTERM)  # what systemd sends to every process of the unit's cgroup
    os.kill(pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    assert stage.process("r", [0])[0].outputs == [pid]


def test_process_before_start_fails_the_items_instead_of_blocking() -> None:
    pipeline, stage = make_spec("double")
    outcome = make_process_stage(pipeline, stage, 1).process("r", [1])[0]
    assert outcome.error is not None and outcome.error.startswith("WorkerStopped")
