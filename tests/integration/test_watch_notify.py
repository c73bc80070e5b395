"""The conf.d watcher (editor saves → one reload of the final content) and sd_notify from the daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_pipelines import echo, install_flow_stages

from harness import DaemonProcess, file_version, wait_for


def _runs_of(daemon: DaemonProcess, name: str, version: str) -> int:
    return daemon.logs().count(f"{name}: version {version} now running")


def _swaps(daemon: DaemonProcess, name: str) -> int:
    return daemon.logs().count(f"{name}: version ")


@pytest.fixture
def watching(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    daemon = make_daemon(watch=True)
    install_flow_stages(daemon)
    daemon.write_pipeline("edited", echo("v1"))
    daemon.write_pipeline("other", echo("other"))
    return daemon.start()


def test_temp_file_and_rename_gives_one_reload(watching: DaemonProcess) -> None:
    path = watching.write_pipeline("edited", echo("v2"))
    version = file_version(path)
    watching.wait_version("edited", version, timeout=5)
    time.sleep(0.6)  # a second reload would come within the quiet period; make sure none does
    assert _runs_of(watching, "edited", version) == 1
    assert watching.pipeline("other")["loaded_at"] == watching.pipeline("other")["loaded_at"]


def test_sed_in_place_and_vim_style_saves(watching: DaemonProcess) -> None:
    path = watching.conf_dir / "edited.toml"
    subprocess.run(["sed", "-i", "s/v1/sed/", str(path)], check=True)
    watching.wait_version("edited", file_version(path), timeout=5)

    # vim: probe file 4913, rename the original to a backup, write the new file, drop the backup
    probe = watching.conf_dir / "4913"
    probe.write_text("")
    probe.unlink()
    backup = watching.conf_dir / "edited.toml~"
    os.rename(path, backup)
    path.write_text(echo("vim"))
    backup.unlink()
    swap = watching.conf_dir / ".edited.toml.swp"
    swap.write_text("swap")
    version = file_version(path)
    watching.wait_version("edited", version, timeout=5)
    time.sleep(0.6)
    assert _runs_of(watching, "edited", version) == 1
    assert watching.pipeline("edited")["description"] == "vim"


def test_burst_of_saves_reloads_the_final_content_once(watching: DaemonProcess) -> None:
    before = _swaps(watching, "edited")
    for i in range(10):
        watching.write_pipeline("edited", echo(f"burst {i}"), atomic=i % 2 == 0)
        time.sleep(0.03)
    final = file_version(watching.conf_dir / "edited.toml")
    started = time.monotonic()
    watching.wait_version("edited", final, timeout=5)
    latency = time.monotonic() - started
    time.sleep(0.6)
    assert _swaps(watching, "edited") - before == 1, watching.logs()[-3000:]
    assert latency < 2.0


def test_added_and_removed_files(watching: DaemonProcess) -> None:
    watching.write_pipeline("fresh", echo("fresh"))
    watching.wait_state("fresh", "running", timeout=5)
    watching.remove_pipeline("fresh")
    watching.wait_for(lambda: watching.client.get("/pipelines/fresh").status_code == 404, timeout=5)
    assert [p["name"] for p in watching.client.get("/pipelines").json()] == ["edited", "other"]


# -- sd_notify ----------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        yield path, sock


def _next_message(sock: socket.socket, skip: tuple[str, ...] = ("STATUS=", "WATCHDOG=")) -> str:
    while True:
        message = sock.recv(4096).decode()
        if not message.startswith(skip):
            return message


def test_notify_messages_for_start_reload_and_stop(
    make_daemon: Callable[..., DaemonProcess], notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    daemon = make_daemon(env={"NOTIFY_SOCKET": path})
    install_flow_stages(daemon)
    daemon.write_pipeline("echo", echo())
    daemon.start(wait=None)
    assert _next_message(sock, skip=()) == "READY=1"  # the very first message
    assert _next_message(sock, skip=()) == "STATUS=1 pipeline running, 0 items/s"
    assert daemon.client.get("/ready").status_code == 200  # the API listened before READY=1
    assert daemon.client.get("/pipelines/echo").json()["state"] == "running"  # first apply done

    daemon.send_signal(signal.SIGHUP)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = _next_message(sock).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and abs(int(usec) - before) < 5_000_000
    assert _next_message(sock) == "READY=1"

    daemon.send_signal(signal.SIGTERM)
    assert _next_message(sock) == "STOPPING=1"
    assert daemon.wait_exit() == 0
    sock.settimeout(0.2)
    rest = []
    with contextlib.suppress(TimeoutError):
        while True:
            rest.append(sock.recv(4096).decode())
    assert [m for m in rest if not m.startswith(("STATUS=", "WATCHDOG="))] == []  # STOPPING=1 once


def test_status_and_watchdog(make_daemon: Callable[..., DaemonProcess], notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    daemon = make_daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    install_flow_stages(daemon)
    daemon.write_pipeline("echo", echo())
    daemon.start(wait=None)
    seen: list[str] = []

    def watchdogs_and_status() -> bool:
        seen.append(sock.recv(4096).decode())
        return seen.count("WATCHDOG=1") >= 3 and any(m.startswith("STATUS=1 pipeline running") for m in seen)

    wait_for(watchdogs_and_status, timeout=10)
    status = next(m for m in seen if m.startswith("STATUS=1 pipeline running"))
    assert status == "STATUS=1 pipeline running, 0 items/s"
    assert daemon.stop() == 0


def test_python_file_change_under_python_path_reloads_that_pipeline(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(watch=True)
    install_flow_stages(daemon)
    code = daemon.base_dir / "code"
    code.mkdir()
    (code / "watched_code.py").write_text("def tag(item):\n    return 'v1'\n")
    daemon.write_pipeline("coded", 'python_path = ["../code"]\n' + echo().replace("flow_stages:slow\"\nargs = { seconds = 0.0 }", "watched_code:tag\""))
    daemon.write_pipeline("other", echo("other"))
    daemon.start()
    other_loaded = daemon.pipeline("other")["loaded_at"]
    coded_loaded = daemon.pipeline("coded")["loaded_at"]
    (code / "watched_code.py").write_text("def tag(item):\n    return 'v2'\n")
    daemon.wait_for(lambda: daemon.pipeline("coded")["loaded_at"] != coded_loaded, timeout=5, what="coded reloaded")
    assert daemon.pipeline("other")["loaded_at"] == other_loaded
    assert daemon.stop() == 0
