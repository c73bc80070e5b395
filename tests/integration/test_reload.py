"""Transactional hot reload with a real daemon: SIGHUP / POST /reload, per-pipeline, keyed by content."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
from daemon_pipelines import BROKEN, echo, flow, install_flow_stages
from flow_stages import read_lines

from harness import DaemonProcess, file_version


def _reload(daemon: DaemonProcess) -> dict[str, Any]:
    r = daemon.client.post("/reload")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sighup_and_post_reload_apply_added_updated_removed(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    daemon.write_pipeline("stay", echo("stay"))
    daemon.write_pipeline("change", echo("v1"))
    daemon.write_pipeline("gone", echo("gone"))
    daemon.start()
    stay_loaded = daemon.pipeline("stay")["loaded_at"]

    changed = daemon.write_pipeline("change", echo("v2"))
    daemon.remove_pipeline("gone")
    daemon.write_pipeline("new", echo("new"))
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_version("change", file_version(changed))
    daemon.wait_state("new", "running")
    daemon.wait_for(lambda: daemon.client.get("/pipelines/gone").status_code == 404, what="gone removed")
    detail = daemon.pipeline("change")
    assert detail["description"] == "v2"
    assert detail["last_reload"]["ok"] is True and detail["last_reload"]["error"] is None
    assert daemon.pipeline("stay")["loaded_at"] == stay_loaded  # never disturbed

    daemon.write_pipeline("change", echo("v3"))
    result = _reload(daemon)
    assert result == {"added": [], "updated": ["change"], "removed": [], "unchanged": ["new", "stay"], "failed": {}}
    assert _reload(daemon)["unchanged"] == ["change", "new", "stay"]
    assert daemon.stop() == 0


def test_invalid_edit_keeps_the_running_version(daemon: DaemonProcess) -> None:
    out = install_flow_stages(daemon)
    good = daemon.write_pipeline("flow", flow(out, delay=0.002))
    daemon.start()
    version = file_version(good)
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > 10, what="items flowing")

    daemon.write_pipeline("flow", BROKEN)
    result = _reload(daemon)
    assert list(result["failed"]) == ["flow"] and "thread" in result["failed"]["flow"]
    detail = daemon.pipeline("flow")
    assert detail["state"] == "running" and detail["version"] == version
    assert "thread" in detail["error"]
    assert detail["last_reload"]["ok"] is False and "thread" in detail["last_reload"]["error"]
    before = len(read_lines(str(out), "consumed.txt"))
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > before + 10, what="old version still flowing")
    assert "flow" in _reload(daemon)["failed"]  # still failing while the file is broken

    fixed = daemon.write_pipeline("flow", flow(out, delay=0.002, description="fixed"))
    assert _reload(daemon)["updated"] == ["flow"]
    detail = daemon.wait_version("flow", file_version(fixed))
    assert detail["error"] is None
    assert daemon.stop() == 0


def test_new_version_that_cannot_start_restores_the_old_one(daemon: DaemonProcess) -> None:
    out = install_flow_stages(daemon)
    good = file_version(daemon.write_pipeline("flow", flow(out, delay=0.002)))
    daemon.start()
    daemon.write_pipeline("flow", flow(out, delay=0.002, work_call="flow_stages:FailingSetup"))
    result = _reload(daemon)
    assert "no database" in result["failed"]["flow"]
    detail = daemon.wait_state("flow", "running")
    assert detail["version"] == good
    assert "no database" in detail["error"]
    assert detail["last_reload"]["ok"] is False
    before = len(read_lines(str(out), "consumed.txt"))
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > before + 10, what="old version flowing again")
    assert daemon.stop() == 0


def test_trigger_during_a_swap_waits_for_the_new_version(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    daemon.write_pipeline("echo", echo("v1", seconds=1.5))
    daemon.start()
    first = daemon.client.post("/pipelines/echo/stages/work/trigger", json={"items": ["in-flight"]})
    assert first.status_code == 202
    daemon.wait_for(lambda: daemon.client.get("/pipelines/echo/stats").json()["stages"]["work"]["busy"] == 1)

    v2 = daemon.write_pipeline("echo", echo("v2", seconds=0.0))
    reload_answer: list[httpx.Response] = []
    reloader = threading.Thread(target=lambda: reload_answer.append(daemon.client.post("/reload")))
    reloader.start()
    daemon.wait_for(lambda: daemon.pipeline("echo")["state"] in ("draining", "starting"), what="swap begun")
    started = time.monotonic()
    during = daemon.client.post("/pipelines/echo/stages/work/trigger", json={"items": ["during-swap"]})
    waited = time.monotonic() - started
    reloader.join(30)
    assert during.status_code == 202, during.text
    assert waited > 0.2  # it waited for the swap instead of getting 409
    assert reload_answer[0].json()["updated"] == ["echo"]
    assert daemon.pipeline("echo")["version"] == file_version(v2)
    run = daemon.client.get(f"/pipelines/echo/runs/{first.json()['run']}").json()
    assert run["state"] == "completed" and run["items"]["finished"] == 1  # finished in the old version
    r = daemon.client.post("/pipelines/echo/stages/work/trigger?wait=true&timeout=10", json={"items": [1]})
    assert r.status_code == 200 and r.json()["state"] == "completed"
    assert daemon.stop() == 0


def test_python_path_code_change_reloads_the_pipeline(daemon: DaemonProcess) -> None:
    code = daemon.conf_dir.parent / "code"
    code.mkdir()
    (code / "tagger.py").write_text("def tag(item):\n    return 'old'\n")
    out = daemon.base_dir / "out"
    out.mkdir()
    install_flow_stages(daemon)
    text = f"""
python_path = ["../code"]
[[stage]]
name = "work"
call = "tagger:tag"
[[stage]]
name = "sink"
kind = "consumer"
call = "flow_stages:record"
args = {{ out_dir = "{out}" }}
"""
    daemon.write_pipeline("tagged", text)
    daemon.start()
    r = daemon.client.post("/pipelines/tagged/stages/work/trigger?wait=true", json={"items": [1]})
    assert r.json()["state"] == "completed"
    (code / "tagger.py").write_text("def tag(item):\n    return 'new'\n")
    assert _reload(daemon)["updated"] == ["tagged"]
    r = daemon.client.post("/pipelines/tagged/stages/work/trigger?wait=true", json={"items": [2]})
    assert r.json()["state"] == "completed"
    assert read_lines(str(out), "consumed.txt") == ["old", "new"]
    assert daemon.stop() == 0


def test_a_pipeline_that_cannot_start_is_failed_and_start_retries_it(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    marker = daemon.base_dir / "db-up"
    daemon.write_module(
        "gated",
        "import os\n"
        "class Gated:\n"
        f"    def setup(self):\n        if not os.path.exists({str(marker)!r}):\n"
        "            raise RuntimeError('database down')\n"
        "    def __call__(self, item):\n        return item\n",
    )
    daemon.write_pipeline("gated", echo().replace("flow_stages:slow\"\nargs = { seconds = 0.0 }", "gated:Gated\""))
    daemon.start()
    detail = daemon.pipeline("gated")
    assert detail["state"] == "failed" and "database down" in detail["error"]
    assert "database down" in _reload(daemon)["failed"]["gated"]
    r = daemon.client.post("/pipelines/gated/start")
    assert r.status_code == 409 and "database down" in r.json()["detail"]
    marker.write_text("")
    assert daemon.client.post("/pipelines/gated/start").json() == {"state": "running"}
    detail = daemon.pipeline("gated")
    assert detail["state"] == "running" and detail["error"] is None
    assert _reload(daemon)["unchanged"] == ["gated"]
    assert daemon.stop() == 0
