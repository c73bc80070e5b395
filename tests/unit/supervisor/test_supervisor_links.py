"""Links in the supervisor, in-process: loops refused at load (and a loop one change of the same
reload removes is none), targets start first, deliveries wait at the target's swap gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelined.engine.links import LinkRefused, LinkSource
from pipelined.supervisor import linkplan
from pipelined.supervisor.links import LinkRouter
from pipelined.supervisor.loop import Supervisor

SOURCE = """
[[stage]]
name = "src"
kind = "producer"
call = "pipelined.stages:count"
auto_start = false
args = {{ stop = 3 }}
to = {to}
"""
TARGET = """
[[stage]]
name = "in"
call = "pipelined.stages:log"
{to}

[[stage]]
name = "keep"
kind = "consumer"
call = "pipelined.stages:write_jsonl"
args = {{ path = "{out}" }}
"""


@pytest.fixture
def supervisor(make_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return make_supervisor()


def target(tmp_path: Path, to: str = "") -> str:
    return TARGET.format(to=to, out=tmp_path / "out.jsonl")


def test_links_that_close_a_loop_fail_the_later_file_and_the_fix_loads(
    supervisor: Supervisor, conf: Path, tmp_path: Path
) -> None:
    (conf / "a.toml").write_text(SOURCE.format(to='["b/in"]'))
    (conf / "b.toml").write_text(target(tmp_path, 'to = ["keep", "c/in"]\nfanout = "broadcast"'))
    (conf / "c.toml").write_text(target(tmp_path, 'to = ["keep", "a/src"]\nfanout = "broadcast"'))
    first = supervisor.reload_all().as_json()
    assert first["added"] == ["a", "b"]
    assert "links close a loop between pipelines: c -> a -> b -> c" in first["failed"]["c"]
    assert supervisor.pipeline("c")["state"] == "failed"
    # the fix, in one reload: b drops its link to c, c links to b instead (a -> b <- c)
    (conf / "b.toml").write_text(target(tmp_path))
    (conf / "c.toml").write_text(target(tmp_path, 'to = ["keep", "b/in"]\nfanout = "broadcast"'))
    second = supervisor.reload_all().as_json()
    assert second["updated"] == ["b", "c"] and second["failed"] == {}, second
    assert supervisor.pipeline("c")["state"] == "running"


def test_a_loop_another_change_of_the_same_reload_removes_is_no_loop(
    supervisor: Supervisor, conf: Path, tmp_path: Path
) -> None:
    (conf / "a.toml").write_text(target(tmp_path))
    (conf / "b.toml").write_text(target(tmp_path, 'to = ["keep", "a/in"]\nfanout = "broadcast"'))
    assert supervisor.reload_all().as_json()["failed"] == {}
    # a (first in name order) now links to b, which at the same time stops linking to a
    (conf / "a.toml").write_text(target(tmp_path, 'to = ["keep", "b/in"]\nfanout = "broadcast"'))
    (conf / "b.toml").write_text(target(tmp_path))
    result = supervisor.reload_all().as_json()
    assert result["updated"] == ["a", "b"] and result["failed"] == {}, result


def test_items_sent_to_a_pipeline_still_starting_wait_for_it(
    supervisor: Supervisor, conf: Path, tmp_path: Path
) -> None:
    """Both start together; z's start takes a second (setup()): a's first items wait at z's gate."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "slowsetup.py").write_text(
        "import time\nclass Slow:\n    def setup(self):\n        time.sleep(1.0)\n"
        "    def __call__(self, item):\n        return item\n"
    )
    (conf / "a.toml").write_text(SOURCE.format(to='["z/in"]').replace("auto_start = false", "auto_start = true"))
    (conf / "z.toml").write_text(
        f'python_path = ["{code}"]\n' + target(tmp_path).replace('call = "pipelined.stages:log"', 'call = "slowsetup:Slow"')
    )
    assert supervisor.reload_all().as_json()["added"] == ["a", "z"]
    [run] = supervisor.runs("a")
    assert supervisor.wait_run("a", run["run"], 10)[1]["state"] == "completed"
    assert supervisor.dead_letters("a", 10) == []
    [linked] = [r for r in supervisor.runs("z") if r["parent"] == f"a/{run['run']}"]
    assert linked["items"]["produced"] == 3
    assert linkplan.upstream_pipelines(supervisor.slots.values()) == {"z": {"a"}}


def test_a_delivery_waits_at_the_swap_gate_and_is_refused_when_the_swap_outlasts_it(
    supervisor: Supervisor, conf: Path, tmp_path: Path
) -> None:
    (conf / "b.toml").write_text(target(tmp_path))
    supervisor.reload_all()
    slot = supervisor.slots["b"]
    slot.begin_swap()
    delivered = threading.Event()

    def deliver() -> None:
        supervisor.links.deliver(LinkSource("a", "r-000001"), "b/in", [{"n": 1}])
        delivered.set()

    thread = threading.Thread(target=deliver)
    thread.start()
    time.sleep(0.2)
    assert not delivered.is_set()  # waiting for the new version
    slot.end_swap()
    assert delivered.wait(5)
    thread.join()
    runs = supervisor.runs("b")
    assert [(r["parent"], r["items"]["produced"]) for r in runs] == [("a/r-000001", 1)]

    impatient = LinkRouter(supervisor._slot_or_none, swap_wait=0.1)
    slot.begin_swap()
    try:
        with pytest.raises(LinkRefused) as refused:
            impatient.deliver(LinkSource("a", "r-000002"), "b/in", [{"n": 2}])
        assert refused.value.text == "pipeline 'b' is not running"
    finally:
        slot.end_swap()
    with pytest.raises(LinkRefused) as refused:
        supervisor.links.deliver(LinkSource("a", "r-000002"), "b/nope", [1])
    assert refused.value.text == "pipeline 'b' has no stage 'nope'"
    with pytest.raises(LinkRefused) as refused:
        supervisor.links.deliver(LinkSource("a", "r-000002"), "gone/in", [1])
    assert refused.value.text == "pipeline 'gone' is not running"
    supervisor.drain("b")
    supervisor.wait_drained("b", 5)
    with pytest.raises(LinkRefused, match="pipeline 'b' is not running"):
        supervisor.links.deliver(LinkSource("a", "r-000003"), "b/in", [1])
