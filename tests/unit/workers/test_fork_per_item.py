"""fork_per_item: a fresh fork per item from a zygote, at most `processes` at once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.spec import Hooks
from pipelined.errors import StartError
from pipelined.workers import make_process_stage
from pipelined.workers.proctree import child_pids, is_running

from .conftest import make_spec, new_children


def test_each_item_gets_a_fresh_process(started: Any) -> None:
    stage = started("pid_of", process_mode="fork_per_item", processes=2)
    pids = [o.outputs[0] for o in stage.process("r", list(range(6)))]
    assert len(set(pids)) == 6 and os.getpid() not in pids
    assert [o.outputs for o in stage.process("r", [1, 2])] != []


def test_class_set_up_once_in_the_zygote_and_after_fork_in_every_child(
    started: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_log = tmp_path / "hooks"
    monkeypatch.setenv("WSTAGES_HOOK_LOG", str(hook_log))
    record = tmp_path / "record"
    stage = started("Scorer", args={"record": str(record), "factor": 2}, process_mode="fork_per_item",
                    processes=2, stage_hooks=Hooks(after_fork="wstages:stage_after_fork"))
    result = stage.process("r", [1, 2, 3])
    assert [o.outputs[0][0] for o in result] == [2, 4, 6]
    child_pids = {o.outputs[0][1] for o in result}
    stage.stop(5.0)
    events = record.read_text().split()
    assert events[0::2] == ["setup", "close"] and events[1] == events[3]  # once, in the zygote
    after_fork_pids = {line.split()[1] for line in hook_log.read_text().splitlines()}
    assert {str(p) for p in child_pids} <= after_fork_pids
    assert new_children() == []


def test_at_most_processes_children_at_once(started: Any) -> None:
    stage = started("slow", process_mode="fork_per_item", processes=2)
    seen: list[int] = []
    caller = threading.Thread(target=lambda: stage.process("r", [0.3] * 4))
    caller.start()
    while caller.is_alive():
        seen.append(stage.live_processes())
        time.sleep(0.02)
    assert max(seen) == 3  # the zygote and two children
    assert stage.live_processes() == 1


def test_crash_errors_and_pickling_fail_only_their_item(started: Any) -> None:
    stage = started("kill_self_on", process_mode="fork_per_item", processes=2)
    result = stage.process("r", ["a", "die", lambda: 0, "b"])
    assert result[0].outputs == ["a"] and result[3].outputs == ["b"]
    assert result[1].error is not None and "killed by SIGKILL" in result[1].error
    assert result[2].error is not None and "stage 'work'" in result[2].error and "function" in result[2].error
    boom = started("boom", process_mode="fork_per_item", processes=1).process("r", [2])[0]
    assert boom.error == "ValueError: bad item 2" and boom.traceback and "in boom" in boom.traceback


def test_failing_setup_or_after_fork_is_a_start_error() -> None:
    for call, hooks, expected in [
        ("FailingSetup", Hooks(), "setup() failed in a worker process: RuntimeError: no model file"),
        ("double", Hooks(after_fork="wstages:failing_hook"), "after_fork 'wstages:failing_hook' failed"),
    ]:
        pipeline, stage = make_spec(call, process_mode="fork_per_item", stage_hooks=hooks)
        with pytest.raises(StartError, match="wtest/work") as caught:
            make_process_stage(pipeline, stage, 2).start()
        assert expected in str(caught.value)
        assert new_children() == []


def test_stop_kills_items_past_the_deadline_and_leaves_nothing(started: Any) -> None:
    stage = started("slow", process_mode="fork_per_item", processes=2)
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.extend(stage.process("r", [60.0, 60.0, 60.0])))
    caller.start()
    deadline = time.monotonic() + 5
    while stage.live_processes() < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stage.stop(0.3)
    caller.join(10)
    assert len(result) == 3 and all(o.error for o in result)
    assert "SIGKILL" in (result[0].error or "") and (result[2].error or "").startswith("WorkerStopped")
    assert new_children() == []


def test_a_killed_zygote_fails_its_items_and_is_started_again(started: Any) -> None:
    import signal

    stage = started("slow", process_mode="fork_per_item", processes=1)
    zygote_pid = stage._zygote.pid
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.extend(stage.process("r", [30.0])))
    caller.start()
    deadline = time.monotonic() + 20  # generous: forkserver + zygote start on a loaded 2-core box
    while stage.live_processes() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    item_children = child_pids(zygote_pid)
    os.kill(zygote_pid, signal.SIGKILL)
    caller.join(30)
    assert not caller.is_alive(), "process() did not return after its zygote was killed"
    assert result[0].error is not None and "zygote died: killed by SIGKILL" in result[0].error
    assert stage.process("r", [0.0])[0].outputs == [0.0]
    assert stage._zygote.pid != zygote_pid
    deadline = time.monotonic() + 5
    while any(is_running(pid) for pid in item_children):  # PR_SET_PDEATHSIG: no orphan left running
        assert time.monotonic() < deadline
        time.sleep(0.01)
