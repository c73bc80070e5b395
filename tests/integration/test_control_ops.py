"""Supervisor as `Control` behind the real API: drain/start, disabled pipelines, config writes, stats."""

from __future__ import annotations

from collections.abc import Callable

from daemon_pipelines import BROKEN, echo, install_flow_stages

from harness import DaemonProcess


def test_drain_start_and_disabled(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    daemon.write_pipeline("echo", echo())
    daemon.write_pipeline("off", "enabled = false\n" + echo("off"))
    daemon.start()
    assert daemon.pipeline("off")["state"] == "disabled"
    assert daemon.client.post("/pipelines/off/start").status_code == 409
    assert daemon.client.post("/pipelines/off/stages/work/trigger", json={"items": [1]}).status_code == 409

    r = daemon.client.post("/pipelines/echo/drain?wait=true&timeout=10")
    assert r.status_code == 200, r.text
    assert daemon.pipeline("echo")["state"] == "drained"
    assert daemon.client.post("/pipelines/echo/drain").status_code == 409
    assert daemon.client.post("/pipelines/echo/stages/work/trigger", json={"items": [1]}).status_code == 409
    assert daemon.client.post("/pipelines/echo/start").json() == {"state": "running"}
    assert daemon.client.post("/pipelines/echo/start").status_code == 409
    r = daemon.client.post("/pipelines/echo/stages/work/trigger?wait=true&timeout=10", json={"items": [1, 2]})
    assert r.status_code == 200 and r.json()["state"] == "completed"

    stats = daemon.client.get("/stats").json()
    assert stats["daemon"]["pipelines"] == 2 and stats["daemon"]["pid"] == daemon.pid
    assert stats["pipelines"]["echo"]["runs"]["completed"] >= 1
    metrics = daemon.client.get("/metrics").text
    assert 'pipelined_reloads_total{pipeline="echo",result="ok"} 1.0' in metrics
    assert daemon.stop() == 0


def test_config_writes(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(settings="[api]\nconfig_write = true\n", token="ops-token")
    install_flow_stages(daemon)
    daemon.start()
    headers = {"content-type": "application/toml"}
    r = daemon.client.put("/pipelines/made", content=echo("made"), headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "running" and (daemon.conf_dir / "made.toml").read_text() == echo("made")
    r = daemon.client.put("/pipelines/made", content=echo("again"), headers=headers)
    assert r.status_code == 200 and r.json()["description"] == "again"

    r = daemon.client.put("/pipelines/made", content=BROKEN, headers=headers)
    assert r.status_code == 400 and "thread" in r.json()["detail"]
    assert (daemon.conf_dir / "made.toml").read_text() == echo("again")
    assert daemon.client.put("/pipelines/Bad Name", content=echo(), headers=headers).status_code in (400, 404)

    assert daemon.client.delete("/pipelines/made").status_code == 200
    assert not (daemon.conf_dir / "made.toml").exists()
    assert daemon.client.get("/pipelines/made").status_code == 404
    assert daemon.stop() == 0


def test_config_writes_are_off_by_default(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    daemon.start()
    r = daemon.client.put("/pipelines/made", content=echo(), headers={"content-type": "application/toml"})
    assert r.status_code == 403
    assert not (daemon.conf_dir / "made.toml").exists()
    assert daemon.stop() == 0
