"""Worker deaths are charged to the item being called; the pool replaces the worker and goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pipelined.workers.proctree import own_children, process_state


def test_sigkill_mid_item_fails_only_that_item(started: Any) -> None:
    stage = started("kill_self_on", processes=1)
    result = stage.process("r", ["a", "die", "b", "c"])
    assert [o.outputs for o in result] == [["a"], [], ["b"], ["c"]]
    assert result[1].error is not None
    assert result[1].error.startswith("WorkerDied: worker died: killed by SIGKILL")
    assert [o.error for o in result if o.error] == [result[1].error]
    assert stage.live_processes() == 1
    assert [o.outputs for o in stage.process("r", ["x"])] == [["x"]]


def test_sigkill_from_outside_while_an_item_runs(started: Any, tmp_path: Path) -> None:
    stage = started("slow", processes=1)
    before = {pid for pid in own_children()}
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.extend(stage.process("r", [0.0, 30.0, 0.0])))
    caller.start()
    worker_pid = _wait_for_worker_pid(stage)
    time.sleep(0.2)  # let it enter the 30 s item (the assertion below checks which one failed)
    os.kill(worker_pid, signal.SIGKILL)
    caller.join(20)
    assert not caller.is_alive()
    assert result[0].error is None and result[2].error is None
    assert result[1].error is not None and "killed by SIGKILL" in result[1].error
    assert process_state(worker_pid) is None  # reaped, not a zombie
    assert stage.live_processes() == 1
    assert before  # the stage had children


def _wait_for_worker_pid(stage: Any) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        slot = stage._slots[0]
        if slot.worker is not None and slot.worker.progress[0] >= 0:
            return int(slot.worker.pid)
        time.sleep(0.01)
    raise AssertionError("the worker never started an item")


def test_exit_code_is_described(started: Any) -> None:
    result = started("exit_on", processes=1).process("r", ["exit", "ok"])
    assert result[0].error is not None and "exited with code 3" in result[0].error
    assert result[1].outputs == ["ok"]


def test_retrying_a_crashed_item_succeeds_on_the_replacement(started: Any, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    stage = started("kill_marked", args={"marker": str(marker)}, processes=2)
    first = stage.process("r", ["die", "x"])
    assert first[0].error is not None and first[1].outputs == ["x"]
    assert stage.process("r", ["die"])[0].outputs == ["die"]
    assert stage.live_processes() == 2


def test_segfault_is_described_and_charged_to_its_item(started: Any) -> None:
    result = started("segfault_on", processes=1).process("r", ["a", "segv", "b"])
    assert [list(o.outputs) for o in result] == [["a"], [], ["b"]]
    assert result[1].error is not None and "killed by SIGSEGV" in result[1].error
