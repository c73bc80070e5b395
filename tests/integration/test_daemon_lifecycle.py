"""`pipelined run` as a real process: start, readiness, broken files, exit statuses, stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import orjson
from daemon_pipelines import BROKEN, echo, flow, install_flow_stages
from flow_stages import read_lines

from harness import DaemonProcess, file_version


def test_start_reports_every_pipeline_and_a_broken_file_fails_only_itself(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    good = daemon.write_pipeline("good", echo("good one"))
    daemon.write_pipeline("broken", BROKEN)
    (daemon.conf_dir / "Bad Name.toml").write_text(echo())
    (daemon.conf_dir / ".hidden.toml").write_text(BROKEN)
    (daemon.conf_dir / "_draft.toml").write_text(BROKEN)
    (daemon.conf_dir / "notes.txt").write_text("not a pipeline")
    daemon.start()

    assert daemon.client.get("/health").json() == {"status": "ok"}
    pipelines = {p["name"]: p for p in daemon.client.get("/pipelines").json()}
    assert sorted(pipelines) == ["broken", "good"]
    assert pipelines["good"]["state"] == "running"
    assert pipelines["good"]["version"] == file_version(good)
    assert pipelines["good"]["error"] is None
    assert pipelines["broken"]["state"] == "failed"
    assert "broken.toml" in pipelines["broken"]["error"] and "thread" in pipelines["broken"]["error"]
    assert "Bad Name.toml" in daemon.logs()

    detail = daemon.pipeline("good")
    assert detail["description"] == "good one" and detail["loaded_at"]
    assert [s["name"] for s in detail["stages"]] == ["work", "sink"]

    result = daemon.client.post("/reload").json()
    assert result["unchanged"] == ["good"]
    assert set(result["failed"]) == {"broken", "Bad Name.toml"}
    assert daemon.stop() == 0


def test_sigterm_drains_in_flight_items_and_exits_0(daemon: DaemonProcess) -> None:
    out = install_flow_stages(daemon)
    daemon.write_pipeline("flow", flow(out, delay=0.002, work_seconds=0.005))
    daemon.start()
    daemon.wait_for(lambda: len(read_lines(str(out), "consumed.txt")) > 50, what="items flowing")
    assert daemon.stop() == 0
    produced = read_lines(str(out), "produced.txt")
    consumed = read_lines(str(out), "consumed.txt")
    assert len(consumed) == len(set(consumed))
    assert set(produced) == set(consumed)  # drain_timeout 10 s: everything in flight finished
    assert "stopping" in daemon.logs()


def test_health_is_503_while_draining_and_second_sigint_exits_130(daemon: DaemonProcess) -> None:
    install_flow_stages(daemon)
    daemon.write_pipeline("slow", echo(seconds=30.0).replace('description = "echo"', 'drain_timeout = "60s"'))
    daemon.start()
    r = daemon.client.post("/pipelines/slow/stages/work/trigger", json={"items": [1]})
    assert r.status_code == 202, r.text
    daemon.wait_for(lambda: daemon.client.get("/pipelines/slow/stats").json()["stages"]["work"]["busy"] == 1)
    daemon.send_signal(signal.SIGINT)
    daemon.wait_for(lambda: daemon.client.get("/health").status_code == 503, what="/health 503")
    assert daemon.client.get("/health").json()["status"] == "stopping"
    assert daemon.client.get("/ready").status_code == 503
    assert daemon.alive()
    assert daemon.stop(sig=signal.SIGINT, timeout=10) == 130


def test_invalid_settings_exit_2_with_the_message(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(settings='[api]\nlistn = "127.0.0.1:9"\n')
    daemon.start(wait=None)
    assert daemon.wait_exit(20) == 2
    assert '[api]: unknown key "listn" (did you mean "listen"?)' in daemon.logs()


def test_non_loopback_bind_without_token_exits_2(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(listen="0.0.0.0:8470")
    daemon.start(wait=None)
    assert daemon.wait_exit(20) == 2
    assert "non-loopback" in daemon.logs()


def test_address_in_use_exits_3(make_daemon: Callable[..., DaemonProcess]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = make_daemon(listen=f"127.0.0.1:{port}")
        daemon.start(wait=None)
        assert daemon.wait_exit(20) == 3
    assert f"cannot listen on 127.0.0.1:{port}" in daemon.logs()


def test_unix_socket_listen(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    sock = daemon.base_dir / "api.sock"
    daemon.listen = f"unix:{sock}"
    daemon.start()
    assert daemon.client.get("/pipelines").json() == []
    assert daemon.stop() == 0
    assert not sock.exists()


def test_run_help_lists_the_flags() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipelined", "run", "--help"], capture_output=True, text=True, timeout=30,
        env={"PYTHONPATH": str(DaemonProcess.package_dir())},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for flag in ("--config", "--conf-dir", "--state-dir", "--listen", "--log-level", "--log-format", "--no-watch"):
        assert flag in done.stdout


def test_settings_change_is_logged_as_needing_a_restart(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(settings="[daemon]\nmax_threads = 10\n")
    daemon.start()
    assert daemon.settings_file is not None
    daemon.settings_file.write_text("[daemon]\nmax_threads = 12\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log("settings changed ([daemon] max_threads): they take effect after a restart")
    assert daemon.stop() == 0


def test_json_log_lines_carry_the_pipeline(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(log_format="json")
    install_flow_stages(daemon)
    daemon.write_pipeline("echo", echo())
    daemon.start()
    assert daemon.stop() == 0
    entries = [orjson.loads(line) for line in daemon.logs().splitlines()]
    started = [e for e in entries if e["message"].startswith("echo: version")]
    assert started and started[0]["pipeline"] == "echo" and started[0]["level"] == "info"


def test_unusable_unix_socket_path_exits_3(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    blocker = daemon.base_dir / "not-a-dir"
    blocker.write_text("")
    daemon.listen = f"unix:{blocker}/api.sock"
    daemon.start(wait=None)
    assert daemon.wait_exit(20) == 3
    assert "cannot listen on unix:" in daemon.logs()
