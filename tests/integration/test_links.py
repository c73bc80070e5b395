"""Links between pipelines through a real daemon: `to = ["b/in"]` and `ctx.emit_to("b/in", ...)`,
linked runs with `parent`, exact counts end to end, the target reloaded, drained, deleted,
loops refused at load, `pipelined check DIR`, and the daemon-wide graph."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from link_stages import read

from harness import DaemonProcess

LINK_STAGES = Path(__file__).with_name("link_stages.py")


def setup(daemon: DaemonProcess) -> Path:
    daemon.write_module("link_stages", LINK_STAGES.read_text())
    out = daemon.base_dir / "out"
    out.mkdir(exist_ok=True)
    return out


def source(
    to: str, *, n: int = 100, retries: int = 3, backoff: str = "20ms", fanout: str = "round_robin",
    description: str = "", producer: str = "link_stages:numbers", fwd: str = "link_stages:same",
    args: str = "",
) -> str:  # fmt: skip
    """Pipeline: producer `src` (on trigger) → processor `fwd` whose `to` is `to`."""
    return f"""
description = "{description}"
max_retries = {retries}
retry_backoff = "{backoff}"

[[stage]]
name = "src"
kind = "producer"
call = "{producer}"
auto_start = false
args = {args or f"{{ n = {n} }}"}

[[stage]]
name = "fwd"
call = "{fwd}"
to = {to}
fanout = "{fanout}"
"""


def sink(out: Path, name: str, *, description: str = "", before: str = "") -> str:
    """Pipeline: processor `in` → consumer `keep` (records into <out>/<name>.txt)."""
    return f"""
description = "{description}"
{before}
[[stage]]
name = "in"
call = "link_stages:same"

[[stage]]
name = "keep"
kind = "consumer"
call = "link_stages:record"
args = {{ out_dir = "{out}", name = "{name}" }}
"""


def trigger_and_wait(daemon: DaemonProcess, pipeline: str, stage: str, body: dict[str, Any]) -> dict[str, Any]:
    r = daemon.client.post(f"/pipelines/{pipeline}/stages/{stage}/trigger", json=body, params={"wait": "true"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def runs_of(daemon: DaemonProcess, pipeline: str, parent: str) -> list[dict[str, Any]]:
    return [r for r in daemon.client.get(f"/pipelines/{pipeline}/runs").json() if r["parent"] == parent]


def ended_runs_of(daemon: DaemonProcess, pipeline: str, parent: str) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        runs = runs_of(daemon, pipeline, parent)
        return runs if runs and all(r["state"] != "running" for r in runs) else None

    return daemon.wait_for(ended, 30, what=f"the linked runs of {parent} in {pipeline} end")


def dead_letters(daemon: DaemonProcess, pipeline: str) -> list[dict[str, Any]]:
    return list(daemon.client.get(f"/pipelines/{pipeline}/dead-letters", params={"limit": 100000}).json())


def stage_stats(daemon: DaemonProcess, pipeline: str, stage: str) -> dict[str, Any]:
    return dict(daemon.client.get(f"/pipelines/{pipeline}/stats").json()["stages"][stage])


# -- flows -----------------------------------------------------------------------------------
def test_two_pipelines_chained_count_exactly_with_one_linked_run(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]', n=2000))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "completed", run
    assert run["items"] == {"produced": 2000, "in_flight": 0, "finished": 2000, "filtered": 0, "dead_lettered": 0}
    [linked] = ended_runs_of(daemon, "b", f"a/{run['run']}")  # one linked run per sending run and link
    assert linked["state"] == "completed" and linked["stage"] == "in", linked
    assert linked["items"]["produced"] == linked["items"]["finished"] == 2000
    assert sorted(map(int, read(str(out), "b"))) == list(range(2000))
    assert run["parent"] is None
    detail = daemon.pipeline("a")
    fwd = next(s for s in detail["stages"] if s["name"] == "fwd")
    assert fwd["downstream"] == ["b/in"]
    assert daemon.stop() == 0


def test_three_pipelines_chained_and_fanned_out(daemon: DaemonProcess) -> None:
    """a/fwd broadcasts to b/in and c/in; b/keep2 (after b/in) sends on to c/more; c counts both."""
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in", "c/in"]', n=500, fanout="broadcast"))
    daemon.write_pipeline("b", f"""
[[stage]]
name = "in"
call = "link_stages:same"
to = ["c/more", "keep"]
fanout = "broadcast"

[[stage]]
name = "keep"
kind = "consumer"
call = "link_stages:record"
args = {{ out_dir = "{out}", name = "b" }}
""")
    daemon.write_pipeline("c", f"""
[[stage]]
name = "in"
kind = "consumer"
call = "link_stages:record"
args = {{ out_dir = "{out}", name = "c-in" }}

[[stage]]
name = "more"
kind = "accumulator"
max_size = 10
to = ["keep"]

[[stage]]
name = "keep"
kind = "consumer"
call = "link_stages:record"
args = {{ out_dir = "{out}", name = "c-more" }}
""")
    daemon.start()
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "completed" and run["items"]["finished"] == 1000, run  # each broadcast copy
    [b_run] = ended_runs_of(daemon, "b", f"a/{run['run']}")
    [c_run] = ended_runs_of(daemon, "c", f"a/{run['run']}")
    [c_more] = ended_runs_of(daemon, "c", f"b/{b_run['run']}")
    assert b_run["items"]["produced"] == c_run["items"]["produced"] == c_more["items"]["produced"] == 500
    assert c_more["stage"] == "more" and c_more["items"]["finished"] == 50  # batches of 10
    for name in ("b", "c-in", "c-more"):
        assert sorted(map(int, read(str(out), name))) == list(range(500)), name
    graph = daemon.client.get("/graph").json()
    assert graph == {
        "pipelines": [{"name": n, "state": "running"} for n in ("a", "b", "c")],
        "links": [{"from": "a/fwd", "to": "b/in"}, {"from": "a/fwd", "to": "c/in"}, {"from": "b/in", "to": "c/more"}],
    }
    assert daemon.stop() == 0


def test_emit_to_a_link_from_threads_and_from_a_worker_process(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", """
[[stage]]
name = "src"
kind = "producer"
call = "link_stages:numbers"
auto_start = false
args = { n = 300 }
to = ["threads", "procs"]

[[stage]]
name = "threads"
kind = "consumer"
call = "link_stages:send_over"
threads = 3

[[stage]]
name = "procs"
kind = "consumer"
call = "link_stages:send_over"
processes = 1
""")
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start(timeout=60)
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "completed", run
    linked = ended_runs_of(daemon, "b", f"a/{run['run']}")
    assert len(linked) == 1 and linked[0]["items"]["finished"] == 300, linked
    assert sorted(map(int, read(str(out), "b"))) == list(range(300))
    assert daemon.stop() == 0


# -- the target's life -----------------------------------------------------------------------
def test_target_reloaded_50_times_while_items_cross_loses_and_duplicates_nothing(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    stop = daemon.base_dir / "stop"
    daemon.write_pipeline("a", f"""
max_retries = 10
retry_backoff = "20ms"

[[stage]]
name = "src"
kind = "producer"
call = "link_stages:until_file"
auto_start = false
args = {{ stop = "{stop}", delay = 0.001 }}

[[stage]]
name = "fwd"
call = "link_stages:same"
threads = 2
to = ["b/in"]
""")
    daemon.write_pipeline("b", sink(out, "b", description="v0"))
    daemon.start()
    started = daemon.client.post("/pipelines/a/stages/src/trigger", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["run"]
    for version in range(1, 51):
        daemon.write_pipeline("b", sink(out, "b", description=f"v{version}"))
        result = daemon.client.post("/reload").json()
        assert result["updated"] == ["b"], result
    stop.touch()
    assert daemon.client.get(f"/pipelines/a/runs/{run_id}").status_code == 200
    run = daemon.wait_for(
        lambda: (r := daemon.client.get(f"/pipelines/a/runs/{run_id}").json())["state"] != "running" and r,
        60, what="the source run ends",
    )  # fmt: skip
    ended_runs_of(daemon, "b", f"a/{run_id}")
    produced = run["items"]["produced"]
    arrived = list(map(int, read(str(out), "b")))
    lettered = [d["item"] for d in dead_letters(daemon, "a")] + [d["item"] for d in dead_letters(daemon, "b")]
    assert len(arrived) == len(set(arrived)), "an item arrived twice"
    assert sorted(arrived + lettered) == list(range(produced)), "an item went missing"
    assert produced > 50
    linked = runs_of(daemon, "b", f"a/{run_id}")
    assert 1 <= len(linked) <= 51  # one per version of b at most
    assert sum(r["items"]["produced"] for r in linked) == len(arrived) + len(dead_letters(daemon, "b"))
    assert daemon.stop() == 0


def test_target_drained_then_started_takes_the_retried_items(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]', n=20, retries=8, backoff="200ms"))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    r = daemon.client.post("/pipelines/b/drain", params={"wait": "true"})
    assert r.status_code == 200 and r.json()["state"] == "drained", r.text
    started = daemon.client.post("/pipelines/a/stages/src/trigger", json={})
    run_id = started.json()["run"]
    daemon.wait_for(lambda: stage_stats(daemon, "a", "fwd")["items_failed"] >= 20, what="attempts refused")
    assert read(str(out), "b") == []
    assert daemon.client.post("/pipelines/b/start").status_code == 200
    run = daemon.wait_for(
        lambda: (r := daemon.client.get(f"/pipelines/a/runs/{run_id}").json())["state"] != "running" and r,
        60, what="the source run ends",
    )  # fmt: skip
    assert run["state"] == "completed" and run["items"]["finished"] == 20, run
    assert sorted(map(int, read(str(out), "b"))) == list(range(20))
    assert stage_stats(daemon, "a", "fwd")["items_retried"] >= 20
    assert dead_letters(daemon, "a") == []
    assert daemon.stop() == 0


def test_target_file_deleted_attempts_fail_and_dead_letter_with_the_spec_error(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]', n=10))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    assert trigger_and_wait(daemon, "a", "src", {})["state"] == "completed"
    daemon.remove_pipeline("b")
    assert daemon.client.post("/reload").json()["removed"] == ["b"]
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "failed", run
    assert run["items"]["dead_lettered"] == 10 and run["items"]["finished"] == 0
    assert "pipeline 'b' is not running" in run["error"]
    letters = dead_letters(daemon, "a")
    assert sorted(d["item"] for d in letters) == list(range(10))
    assert {d["error"] for d in letters} == {"pipeline 'b' is not running"}
    assert {(d["stage"], d["attempts"]) for d in letters} == {("fwd", 4)}  # max_retries = 3
    assert len(read(str(out), "b")) == 10  # only the first run's
    assert daemon.stop() == 0


def test_a_broadcast_to_two_links_one_refusing_sends_the_other_each_item_once(daemon: DaemonProcess) -> None:
    """a/fwd broadcasts to b/in and c/in; c is gone. b takes each item before c refuses it, and a
    link cannot take items back: the retries go to c alone (b got duplicates on every retry), and
    what c never takes is dead-lettered with the spec's error."""
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in", "c/in"]', n=10, fanout="broadcast"))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.write_pipeline("c", sink(out, "c"))
    daemon.start()
    daemon.remove_pipeline("c")
    assert daemon.client.post("/reload").json()["removed"] == ["c"]
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "failed", run
    assert "pipeline 'c' is not running" in run["error"]
    assert (run["items"]["finished"], run["items"]["dead_lettered"], run["items"]["in_flight"]) == (10, 10, 0), run
    ended_runs_of(daemon, "b", f"a/{run['run']}")
    assert sorted(map(int, read(str(out), "b"))) == list(range(10))  # each once
    letters = dead_letters(daemon, "a")
    assert sorted(d["item"] for d in letters) == list(range(10))
    assert {(d["stage"], d["error"], d["attempts"]) for d in letters} == {("fwd", "pipeline 'c' is not running", 4)}
    assert daemon.stop() == 0


def test_a_full_reject_queue_of_the_target_refuses_and_the_attempt_is_retried(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]', n=30, retries=50, backoff="50ms"))
    daemon.write_pipeline("b", f"""
[[stage]]
name = "in"
call = "link_stages:slow"
queue_size = 2
on_full = "reject"
args = {{ seconds = 0.02 }}

[[stage]]
name = "keep"
kind = "consumer"
call = "link_stages:record"
args = {{ out_dir = "{out}", name = "b" }}
""")
    daemon.start()
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "completed", (run, dead_letters(daemon, "a")[:3])
    assert stage_stats(daemon, "a", "fwd")["items_retried"] > 0  # b refused some: "no room"
    ended_runs_of(daemon, "b", f"a/{run['run']}")
    assert sorted(map(int, read(str(out), "b"))) == list(range(30))
    assert daemon.stop() == 0


def test_draining_the_target_while_items_cross_never_deadlocks(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]', n=100000, retries=1))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    run_id = daemon.client.post("/pipelines/a/stages/src/trigger", json={}).json()["run"]
    daemon.wait_for(lambda: len(read(str(out), "b")) > 100, what="items crossing")
    r = daemon.client.post("/pipelines/b/drain", params={"wait": "true", "timeout": 20})
    assert r.status_code == 200 and r.json()["state"] == "drained", r.text
    r = daemon.client.post("/pipelines/a/drain", params={"wait": "true", "timeout": 20})
    assert r.status_code == 200 and r.json()["state"] == "drained", r.text
    run = daemon.client.get(f"/pipelines/a/runs/{run_id}").json()
    arrived = len(read(str(out), "b"))
    assert run["items"]["produced"] == arrived + run["items"]["dead_lettered"], run
    assert daemon.stop() == 0


# -- load-time checks --------------------------------------------------------------------------
def test_a_file_whose_links_close_a_loop_fails_to_load(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]'))
    daemon.write_pipeline("b", sink(out, "b").replace('call = "link_stages:same"', 'call = "link_stages:same"\nto = ["keep", "a/fwd"]\nfanout = "broadcast"'))
    daemon.start()
    states = {p["name"]: p for p in daemon.client.get("/pipelines").json()}
    assert states["a"]["state"] == "running"
    assert states["b"]["state"] == "failed"
    assert "b/in/to: links close a loop between pipelines: b -> a -> b (b/in -> a/fwd, a/fwd -> b/in)" in (
        states["b"]["error"]
    )
    # the fix loads: b without its link back
    daemon.write_pipeline("b", sink(out, "b"))
    assert daemon.client.post("/reload").json()["updated"] == ["b"]
    assert daemon.pipeline("b")["state"] == "running"
    # and now a's edit that would close the loop is refused, its running version kept
    daemon.write_pipeline("a", source('["b/in"]', description="v2"))
    daemon.write_pipeline("b", sink(out, "b").replace('call = "link_stages:same"', 'call = "link_stages:same"\nto = ["a/fwd"]'))
    result = daemon.client.post("/reload").json()
    assert result["updated"] == ["a"] and "links close a loop" in result["failed"]["b"], result
    assert daemon.stop() == 0


def test_check_dir_reports_a_link_to_a_missing_stage_and_a_single_file_only_warns(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "a.toml").write_text(
        source('["b/nowhere"]', producer="pipelined.stages:count", fwd="pipelined.stages:log", args="{ stop = 3 }")
    )
    (conf / "b.toml").write_text('[[stage]]\nname = "in"\nkind = "consumer"\ncall = "pipelined.stages:log"\n')

    def check(*paths: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(DaemonProcess.package_dir())}
        return subprocess.run([sys.executable, "-m", "pipelined", "check", *map(str, paths)],
                              capture_output=True, text=True, timeout=60, env=env)  # fmt: skip

    whole = check(conf)
    assert whole.returncode == 1, whole.stdout + whole.stderr
    assert re.search(
        rf'^{re.escape(str(conf / "a.toml"))}:\d+: a/fwd/to: link "b/nowhere": pipeline "b" has no stage "nowhere"$',
        whole.stdout,
        re.MULTILINE,
    ), whole.stdout
    alone = check(conf / "a.toml")
    assert alone.returncode == 0, alone.stdout
    assert "warning: " in alone.stdout and 'link "b/nowhere": no pipeline "b" among the files checked' in alone.stdout


# -- the daemon-wide graph ---------------------------------------------------------------------
def test_daemon_wide_graph_in_json_mermaid_and_dot(daemon: DaemonProcess) -> None:
    from unit_graph_render import parse_mermaid  # the strict Mermaid reader of the render tests

    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in", "gone/x"]'))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    graph = daemon.client.get("/graph").json()
    assert graph == {
        "pipelines": [{"name": "a", "state": "running"}, {"name": "b", "state": "running"}],
        "links": [{"from": "a/fwd", "to": "b/in"}, {"from": "a/fwd", "to": "gone/x"}],
    }
    mermaid = daemon.client.get("/graph", params={"format": "mermaid"})
    assert mermaid.headers["content-type"].startswith("text/plain")
    nodes, edges, subgraphs = parse_mermaid(mermaid.text)
    assert subgraphs == ["pl_a", "pl_b"]
    assert ("st_a_2f_fwd", "st_b_2f_in", "link") in edges and ("st_a_2f_src", "st_a_2f_fwd", None) in edges
    assert nodes["st_gone_2f_x"] == "gone/x<br/>not loaded"
    dot = daemon.client.get("/graph", params={"format": "dot"})
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot.text, capture_output=True, text=True, timeout=30)
        assert svg.returncode == 0 and "<svg" in svg.stdout and not svg.stderr, svg.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "pipelined", "graph", "--remote", "--api", daemon.url],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(DaemonProcess.package_dir())},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == mermaid.text
    pipeline_graph = daemon.client.get("/pipelines/a/graph").json()
    assert {"id": "b/in", "kind": "external", "threads": 0, "processes": 0, "auto_start": False,
            "pipeline": "b", "stage": "in"} in pipeline_graph["nodes"]  # fmt: skip
    assert daemon.stop() == 0


@pytest.fixture(autouse=True)
def _render_tests_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """`unit_graph_render`: tests/unit/graph/test_render.py, whose parse_mermaid checks Mermaid."""
    import importlib.util

    if "unit_graph_render" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "unit" / "graph" / "test_render.py"
        spec = importlib.util.spec_from_file_location("unit_graph_render", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["unit_graph_render"] = module
        spec.loader.exec_module(module)


def test_the_source_reloaded_while_items_cross_delivers_what_it_had(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    slow_fwd = source('["b/in"]').replace('call = "link_stages:same"', 'call = "link_stages:slow"\nthreads = 2')
    daemon.write_pipeline("a", slow_fwd)
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    accepted = daemon.client.post("/pipelines/a/stages/fwd/trigger", json={"items": list(range(200))})
    run_id = accepted.json()["run"]
    daemon.wait_for(lambda: len(read(str(out), "b")) > 20, what="items crossing")
    daemon.write_pipeline("a", slow_fwd.replace('description = ""', 'description = "v2"'))
    assert daemon.client.post("/reload").json()["updated"] == ["a"]  # the old version drained first
    run = daemon.client.get(f"/pipelines/a/runs/{run_id}").json()
    assert run["state"] == "completed" and run["items"]["finished"] == 200, run
    [linked] = ended_runs_of(daemon, "b", f"a/{run_id}")
    assert linked["items"]["finished"] == 200
    assert sorted(map(int, read(str(out), "b"))) == list(range(200))
    assert daemon.stop() == 0


def test_a_put_whose_links_would_close_a_loop_is_400(make_daemon: Any, tmp_path: Path) -> None:
    token = tmp_path / "api.token"
    token.write_text("links-test-token\n")
    token.chmod(0o600)
    daemon = make_daemon(settings=f'[api]\ntoken_file = "{token}"\nconfig_write = true\n')
    daemon.client.headers["Authorization"] = "Bearer links-test-token"
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]'))
    daemon.write_pipeline("b", sink(out, "b"))
    daemon.start()
    looping = sink(out, "b").replace('call = "link_stages:same"', 'call = "link_stages:same"\nto = ["keep", "a/fwd"]')
    r = daemon.client.put("/pipelines/b", content=looping, headers={"Content-Type": "application/toml"})
    assert r.status_code == 400, r.text
    assert "links close a loop between pipelines: b -> a -> b" in r.text
    assert daemon.pipeline("b")["state"] == "running" and daemon.pipeline("b")["error"] is None
    assert daemon.stop() == 0


def test_a_target_with_a_disk_buffer_stores_what_crosses_and_replays_it_after_kill_9(daemon: DaemonProcess) -> None:
    out = setup(daemon)
    daemon.write_pipeline("a", source('["b/in"]', n=40))
    slow_sink = sink(out, "b", before='buffer = "disk"').replace(
        'call = "link_stages:same"', 'call = "link_stages:slow"\nargs = { seconds = 0.05 }'
    )
    daemon.write_pipeline("b", slow_sink)
    daemon.start()
    run = trigger_and_wait(daemon, "a", "src", {})
    assert run["state"] == "completed" and run["items"]["finished"] == 40, run  # all on b's disk
    [linked] = runs_of(daemon, "b", f"a/{run['run']}")
    daemon.wait_for(lambda: len(read(str(out), "b")) >= 5, what="b working")
    daemon.kill()  # kill -9 while b works through what it stored
    before = set(map(int, read(str(out), "b")))
    assert len(before) < 40
    daemon.proc = None
    daemon.start()
    daemon.wait_for(lambda: set(map(int, read(str(out), "b"))) == set(range(40)), 30, what="the replay")
    replayed = daemon.client.get(f"/pipelines/b/runs/{linked['run']}").json()
    assert replayed["recovered"] is True and replayed["parent"] == f"a/{run['run']}", replayed
    assert daemon.stop() == 0
