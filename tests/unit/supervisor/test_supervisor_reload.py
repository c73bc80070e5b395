"""The supervisor in-process (no HTTP, no signals): reloads of a real conf dir, and what it
tells the service manager through the `Notifier` the host passes in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelined.config.settings import Settings
from pipelined.supervisor.control import Notifier, SilentNotifier
from pipelined.supervisor.loop import Supervisor

PIPELINE = """
[[stage]]
name = "numbers"
kind = "producer"
call = "pipelined.stages:count"
auto_start = false

[[stage]]
name = "keep"
kind = "consumer"
call = "pipelined.stages:write_jsonl"
args = {{ path = "{out}" }}
"""


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def ready(self) -> bool:
        self.sent.append("ready")
        return True

    def reloading(self) -> bool:
        self.sent.append("reloading")
        return True

    def stopping(self) -> bool:
        self.sent.append("stopping")
        return True


@pytest.fixture
def supervisor(make_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return make_supervisor(RecordingNotifier())


def test_reload_all_adds_keeps_and_removes_pipelines(supervisor: Supervisor, conf: Path, tmp_path: Path) -> None:
    (conf / "orders.toml").write_text(PIPELINE.format(out=tmp_path / "orders.jsonl"))
    (conf / "broken.toml").write_text(PIPELINE.format(out=tmp_path / "b.jsonl").replace("count", "nope"))

    first = supervisor.reload_all().as_json()
    assert first["added"] == ["orders"]
    assert list(first["failed"]) == ["broken"] and "nope" in first["failed"]["broken"]
    assert supervisor.pipeline("orders")["state"] == "running"

    assert supervisor.reload_all().as_json()["unchanged"] == ["orders"]

    (conf / "orders.toml").unlink()
    third = supervisor.reload_all().as_json()
    assert third["removed"] == ["orders"]
    assert [p["name"] for p in supervisor.list_pipelines()] == ["broken"]


def test_a_stop_request_tells_the_notifier_once(supervisor: Supervisor) -> None:
    notifier = supervisor.notifier
    assert isinstance(notifier, RecordingNotifier)
    supervisor.request_stop("test")
    supervisor.request_stop("test again")
    assert supervisor.is_stopping()
    assert notifier.sent == ["stopping"]


def test_without_a_notifier_the_supervisor_tells_no_one(tmp_path: Path) -> None:
    sup = Supervisor(Settings().with_overrides(conf_dir=tmp_path, state_dir=tmp_path / "state"))
    silent: Notifier = sup.notifier
    assert isinstance(silent, SilentNotifier)
    assert (silent.ready(), silent.reloading(), silent.stopping()) == (False, False, False)
    sup.request_stop("test")
    assert sup.is_stopping()
