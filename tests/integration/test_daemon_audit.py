"""Audit of spec/daemon.md against a real daemon: CLI forms, logging, startup details."""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from harness import DaemonProcess, file_version

STAGES = '''
import logging
import time
import warnings


def produce(n=3):
    logging.getLogger("user").info("producing %s", n)
    yield from range(n)


async def anoisy(x):
    logging.getLogger("user").warning("async user log %s", x)
    return x


def noisy(x):
    logging.getLogger("user").warning("user log %s", x)
    warnings.warn("a user warning")
    return x


def sink(x):
    pass


def stuck(x):
    time.sleep(30)
    return x


class SlowStart:
    def __init__(self):
        time.sleep(0.5)  # the first apply outlasts the watcher's first setup

    def __call__(self, x):
        return x
'''

NOISY = """
[[stage]]
name = "src"
kind = "producer"
call = "auditstages:produce"
auto_start = false

[[stage]]
name = "in_thread"
call = "auditstages:noisy"

[[stage]]
name = "in_process"
call = "auditstages:noisy"
processes = 1

[[stage]]
name = "in_async"
call = "auditstages:anoisy"

[[stage]]
name = "out"
kind = "consumer"
call = "auditstages:sink"
"""


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelined", *args], capture_output=True, text=True, timeout=timeout,
        env={"PYTHONPATH": str(DaemonProcess.package_dir())},
    )  # fmt: skip


def test_client_options_before_or_after_the_subcommand(daemon: DaemonProcess) -> None:
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("noisy", NOISY)
    daemon.start()
    api = f"http://{daemon.listen}"
    for args in (
        ("--api", api, "status"),
        ("status", "--api", api),
        ("--api", api, "--json", "status"),
        ("--json", "status", "--api", api),
    ):
        done = cli(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "noisy" in done.stdout
        if "--json" in args:
            assert orjson.loads(done.stdout)[0]["name"] == "noisy"
        else:
            assert done.stdout.split()[:2] == ["NAME", "STATE"]
    # given after the subcommand, it wins over the one before it
    done = cli("--api", "http://127.0.0.1:1", "status", "--api", api)
    assert done.returncode == 0, done.stderr
    done = cli("--api", "http://127.0.0.1:1", "status")
    assert done.returncode == 1 and "cannot reach" in done.stderr
    assert daemon.stop() == 0


def test_json_log_format_every_line_is_json_even_python_warnings(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(log_format="json")
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("noisy", NOISY)
    daemon.start()
    run = daemon.client.post("/pipelines/noisy/stages/src/trigger?wait=true", json={"args": {"n": 2}}).json()
    assert run["state"] == "completed", run
    assert daemon.stop() == 0
    lines = daemon.logs().splitlines()
    entries = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    warned = {e.get("stage") for e in entries if e["logger"] == "py.warnings"}
    assert warned == {"in_thread", "in_process"}, entries
    user = [e for e in entries if e["logger"] in ("py.warnings", "user")]
    assert {e["stage"] for e in user} == {"src", "in_thread", "in_process", "in_async"}
    assert all(e["pipeline"] == "noisy" and e["run"] == run["run"] for e in user), user


def test_startup_freezes_the_objects_alive_then() -> None:
    from pipelined.supervisor.loop import freeze_startup_objects

    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        yield path, sock


def test_one_edit_under_the_watcher_is_one_reloading_ready_pair(
    make_daemon: Callable[..., DaemonProcess], notify_socket: tuple[str, socket.socket]
) -> None:
    """The watcher restarts when the watched dirs change (python_path added after the first
    apply) and re-scans once; that no-op re-scan must not announce a reload to systemd."""
    path, sock = notify_socket
    daemon = make_daemon(watch=True, env={"NOTIFY_SOCKET": path})
    code = daemon.base_dir / "code"
    code.mkdir()
    (code / "auditstages.py").write_text(STAGES)
    toml = 'python_path = ["../code"]\n' + NOISY.replace("processes = 1", "threads = 1").replace(
        'call = "auditstages:anoisy"', 'call = "auditstages:SlowStart"'
    )
    daemon.write_pipeline("noisy", toml)
    daemon.start()
    edited = daemon.write_pipeline("noisy", 'description = "v2"\n' + toml)
    daemon.wait_version("noisy", file_version(edited))
    assert daemon.stop() == 0
    sock.settimeout(0.2)
    messages = []
    with contextlib.suppress(TimeoutError):
        while True:
            messages.append(sock.recv(4096).decode())
    states = [m.split("\n")[0] for m in messages if not m.startswith(("STATUS=", "WATCHDOG="))]
    assert states == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], messages
    assert daemon.logs().count("reload (watcher)") == 1  # the no-op re-scan is not logged either


def test_unreadable_token_file_exits_2_naming_the_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "pipelined.toml"
    settings.write_text(f'[api]\ntoken_file = "{tmp_path / "missing"}"\n')
    done = cli("run", "--config", str(settings), "--conf-dir", str(tmp_path), "--state-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"{settings}: [api]: token_file: cannot read {tmp_path / 'missing'}" in done.stderr


def test_reverting_a_failed_edit_leaves_the_running_version_alone(daemon: DaemonProcess) -> None:
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("noisy", NOISY)
    daemon.start()
    before = daemon.pipeline("noisy")
    daemon.write_pipeline("noisy", NOISY.replace("auditstages:sink", "auditstages:nothere"))
    failed = daemon.client.post("/reload").json()
    assert list(failed["failed"]) == ["noisy"] and "nothere" in failed["failed"]["noisy"]
    assert daemon.pipeline("noisy")["error"]

    daemon.write_pipeline("noisy", NOISY)  # back to what runs: the content hash is the running one
    result = daemon.client.post("/reload").json()
    assert result == {"added": [], "updated": [], "removed": [], "unchanged": ["noisy"], "failed": {}}
    after = daemon.pipeline("noisy")
    assert after["state"] == "running" and after["error"] is None and after["last_reload"]["ok"] is True
    assert after["loaded_at"] == before["loaded_at"] and after["version"] == before["version"]  # not restarted
    assert daemon.stop() == 0


def test_a_conf_dir_created_after_start_is_loaded_by_the_watcher(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(watch=True)
    daemon.write_module("auditstages", STAGES)
    daemon.conf_dir.rmdir()
    daemon.start()
    assert daemon.client.get("/pipelines").json() == []
    staged = daemon.base_dir / "staged"
    staged.mkdir()
    (staged / "noisy.toml").write_text(NOISY)
    staged.rename(daemon.conf_dir)  # the directory appears with its file already in it
    daemon.wait_state("noisy", "running")
    assert daemon.stop() == 0


def test_fixing_the_code_of_a_pipeline_that_failed_to_load_starts_it(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(watch=True)
    code = daemon.base_dir / "code"
    code.mkdir()
    (code / "auditstages.py").write_text(STAGES.replace("def sink(", "def not_sink_yet("))
    daemon.write_pipeline("noisy", 'python_path = ["../code"]\n' + NOISY)
    daemon.start()
    assert daemon.pipeline("noisy")["state"] == "failed"
    (code / "auditstages.py").write_text(STAGES)  # the missing function is there now
    daemon.wait_state("noisy", "running")
    assert daemon.pipeline("noisy")["error"] is None
    assert daemon.stop() == 0


def test_cannot_listen_in_json_format_exits_3_with_only_json_lines(make_daemon: Callable[..., DaemonProcess]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = make_daemon(listen=f"127.0.0.1:{port}", log_format="json")
        daemon.start(wait=None)
        assert daemon.wait_exit(20) == 3
    entries = [orjson.loads(line) for line in daemon.logs().splitlines()]
    assert [e["message"] for e in entries if e["logger"] == "pipelined.daemon"] == [f"cannot listen on 127.0.0.1:{port}"]


def test_second_sigint_exits_130_and_json_logs_stay_json(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(log_format="json")
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("stuck", 'drain_timeout = "60s"\n[[stage]]\nname = "work"\ncall = "auditstages:stuck"\n'
                          '[[stage]]\nname = "out"\nkind = "consumer"\ncall = "auditstages:sink"\n')  # fmt: skip
    daemon.start()
    assert daemon.client.post("/pipelines/stuck/stages/work/trigger", json={"items": [1]}).status_code == 202
    daemon.wait_for(lambda: daemon.client.get("/pipelines/stuck/stats").json()["stages"]["work"]["busy"] == 1)
    daemon.send_signal(signal.SIGINT)
    daemon.wait_for(lambda: daemon.client.get("/health").status_code == 503, what="/health 503")
    assert daemon.stop(sig=signal.SIGINT, timeout=10) == 130
    entries = [orjson.loads(line) for line in daemon.logs().splitlines()]
    assert any(e["message"].startswith("second SIGINT") for e in entries)


def test_a_conf_dir_swapped_by_rename_is_watched_again(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(watch=True)
    daemon.write_module("auditstages", STAGES)
    daemon.write_pipeline("first", NOISY)
    daemon.start()
    staged = daemon.base_dir / "conf.new"
    staged.mkdir()
    (staged / "second.toml").write_text(NOISY)
    daemon.conf_dir.rename(daemon.base_dir / "conf.old")
    staged.rename(daemon.conf_dir)  # a deploy swaps the whole directory
    daemon.wait_state("second", "running")
    daemon.wait_for(lambda: daemon.client.get("/pipelines/first").status_code == 404, what="first removed")
    (daemon.conf_dir / "third.toml").write_text(NOISY)  # and edits in the new directory are seen
    daemon.wait_state("third", "running")
    assert daemon.stop() == 0


def test_an_invalid_file_name_is_reported_as_check_reports_it(daemon: DaemonProcess) -> None:
    daemon.write_module("auditstages", STAGES)
    bad = daemon.conf_dir / "Bad.Name.toml"
    bad.write_text(NOISY)
    daemon.start()
    checked = cli("check", str(bad))
    assert checked.returncode == 1
    line = checked.stdout.splitlines()[0]
    assert line.startswith(f"{bad}: ") and "invalid pipeline name" in line
    assert daemon.client.post("/reload").json()["failed"] == {"Bad.Name.toml": line}
    assert line in daemon.logs()
    assert daemon.stop() == 0


def _uses(module: str) -> str:
    return f"""python_path = ["../code"]
[[stage]]
name = "work"
call = "{module}:work"

[[stage]]
name = "out"
kind = "consumer"
call = "{module}:sink"
"""


def test_a_code_change_reloads_only_the_pipelines_that_use_the_changed_module(daemon: DaemonProcess) -> None:
    code = daemon.base_dir / "code"
    code.mkdir()
    (code / "helper.py").write_text("TAG = 'v1'\n")
    (code / "mod_a.py").write_text("import helper\n\ndef work(x):\n    return helper.TAG\n\ndef sink(x):\n    pass\n")
    (code / "mod_b.py").write_text("def work(x):\n    return 'b1'\n\ndef sink(x):\n    pass\n")
    daemon.write_pipeline("pa", _uses("mod_a"))
    daemon.write_pipeline("pb", _uses("mod_b"))
    daemon.start()
    loaded = {name: daemon.pipeline(name)["loaded_at"] for name in ("pa", "pb")}

    (code / "mod_b.py").write_text("def work(x):\n    return 'b2'\n\ndef sink(x):\n    pass\n")
    result = daemon.client.post("/reload").json()
    assert (result["updated"], result["unchanged"]) == (["pb"], ["pa"])
    assert daemon.pipeline("pa")["loaded_at"] == loaded["pa"]  # not its module: not disturbed

    (code / "helper.py").write_text("TAG = 'v2'\n")  # imported by mod_a: pa's code
    result = daemon.client.post("/reload").json()
    assert (result["updated"], result["unchanged"]) == (["pa"], ["pb"])
    run = daemon.client.post("/pipelines/pa/stages/work/trigger?wait=true", json={"items": [1]}).json()
    assert run["state"] == "completed"
    (code / "unused.py").write_text("X = 1\n")  # a new module nobody imports
    assert daemon.client.post("/reload").json()["unchanged"] == ["pa", "pb"]
    assert daemon.stop() == 0
