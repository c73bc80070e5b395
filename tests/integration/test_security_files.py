"""Issue 16, findings 3, 6 and 7, against a real daemon.

3. `POST .../trigger {"args": {"path": "/etc/shadow"}}` read the file into the pipeline (and its
   lines came back through dead letters); `../` and `~` left the state dir, `/dev/zero` grew the
   daemon by 2 GB in 8 s. Now built-in file stages stay under their roots and `trigger_args`
   limits what a trigger may set.
6. A pipeline file (or conf dir) any local user may write is code execution: refused.
7. Dead letters and stage outputs were 0644 outside systemd: now 0600 (dirs 0700) whatever
   the umask.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import DaemonProcess, wait_for

READER = """
[[stage]]
name = "lines"
kind = "producer"
call = "pipelined.stages:read_lines"
auto_start = false
args = {{ path = "in/none.txt"{extra} }}
{trigger_args}

[[stage]]
name = "store"
kind = "consumer"
call = "pipelined.stages:write_jsonl"
max_retries = 0
args = {{ path = "{out}" }}
"""


def reader(out: str = "out/lines.jsonl", trigger_args: str = "", extra: str = "") -> str:
    return READER.format(out=out, trigger_args=trigger_args, extra=extra)


def run_of(daemon: DaemonProcess, pipeline: str, args: dict[str, Any]) -> dict[str, Any]:
    r = daemon.client.post(f"/pipelines/{pipeline}/stages/lines/trigger?wait=true", json={"args": args})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_trigger_args_cannot_leave_the_roots(make_daemon: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    daemon = make_daemon(settings=f'[daemon]\nread_paths = ["{tmp_path / "shared"}", "/dev"]\n')
    daemon.write_pipeline("shell", reader())
    inside = daemon.state_dir / "in" / "ok.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("one\ntwo\n")
    os.mkfifo(daemon.state_dir / "in" / "pipe")
    (daemon.state_dir / "in" / "escape").symlink_to("/etc/passwd")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "extra.txt").write_text("extra\n")
    daemon.start()

    assert run_of(daemon, "shell", {"path": "in/ok.txt"})["state"] == "completed"
    assert run_of(daemon, "shell", {"path": str(tmp_path / "shared" / "extra.txt")})["state"] == "completed"
    refused = {
        "/etc/shadow": "/etc/shadow is outside the roots allowed for reading ([daemon] read_paths: ",
        "../../../../../etc/passwd": "is outside the roots allowed for reading",
        "~/.bashrc": "no such file",  # `~` is a name like any other, under the state dir
        "/proc/self/environ": "is outside the roots allowed for reading",
        "in/escape": "leads through a symlink to /etc/passwd, outside the roots allowed for reading",
        "/dev/zero": "/dev/zero is a character device; built-in stages only use regular files",
        "in/pipe": "is a FIFO; built-in stages only use regular files",
        "in": "is a directory",
    }
    for path, rule in refused.items():
        run = run_of(daemon, "shell", {"path": path})
        assert run["state"] == "failed" and rule in run["error"], (path, run)
        assert run["items"]["produced"] == 0
    out = daemon.state_dir / "out" / "lines.jsonl"
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == ["one", "two", "extra"]
    assert daemon.client.get("/pipelines/shell/dead-letters").json() == []
    assert daemon.stop() == 0


def test_trigger_args_is_an_allowlist(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    daemon.write_pipeline("shell", reader(trigger_args='trigger_args = ["path"]'))
    daemon.write_pipeline("locked", reader(trigger_args="trigger_args = []"))
    daemon.start()
    for args in ({"encoding": "latin-1"}, {"path": "in/x", "max_line": 1}):
        r = daemon.client.post("/pipelines/shell/stages/lines/trigger", json={"args": args})
        assert r.status_code == 400, r.text
        assert "the arguments a trigger may set (trigger_args) are: 'path'" in r.json()["detail"]
    r = daemon.client.post("/pipelines/locked/stages/lines/trigger", json={"args": {"path": "x"}})
    assert r.status_code == 400 and "(trigger_args) are: none" in r.json()["detail"]
    assert daemon.client.post("/pipelines/locked/stages/lines/trigger").status_code == 202  # no args: fine
    assert daemon.stop() == 0


def test_trigger_args_names_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(reader(trigger_args='trigger_args = ["pth"]'))
    done = subprocess.run([sys.executable, "-m", "pipelined", "check", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "typo/lines/trigger_args: pipelined.stages:read_lines does not accept 'pth'" in done.stdout + done.stderr


def test_write_jsonl_outside_its_roots_dead_letters_with_the_rule(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon()
    daemon.write_pipeline("shell", reader(out=str(tmp_path / "elsewhere.jsonl")))
    (daemon.state_dir / "in").mkdir()
    (daemon.state_dir / "in" / "ok.txt").write_text("one\n")
    daemon.start()
    run = run_of(daemon, "shell", {"path": "in/ok.txt"})
    assert run["state"] == "failed" and run["items"]["dead_lettered"] == 1
    (letter,) = daemon.client.get("/pipelines/shell/dead-letters").json()
    assert "is outside the roots allowed for writing ([daemon] write_paths: " in letter["error"]
    assert not (tmp_path / "elsewhere.jsonl").exists()
    assert daemon.stop() == 0


def test_long_lines_are_cut_and_counted(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    daemon.write_pipeline("shell", reader(extra=', max_line = "1KiB"'))
    (daemon.state_dir / "in").mkdir()
    (daemon.state_dir / "in" / "long.txt").write_bytes(b"x" * (5 * 1024 * 1024) + b"\nshort\n")
    daemon.start()
    assert run_of(daemon, "shell", {"path": "in/long.txt"})["state"] == "completed"
    lines = [orjson.loads(line) for line in (daemon.state_dir / "out" / "lines.jsonl").read_bytes().splitlines()]
    assert lines == ["x" * 1024, "short"]
    daemon.wait_log("1 line(s) longer than max_line (1024) were cut")
    assert daemon.stop() == 0


# -- finding 6 --------------------------------------------------------------------------------------
def test_pipeline_files_others_may_write_are_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    path = daemon.write_pipeline("shell", reader())
    path.chmod(0o666)
    daemon.start()
    detail = daemon.pipeline("shell")
    assert detail["state"] == "failed"
    assert f"refused: the file ({path}, mode 0666) is writable by others" in detail["error"]
    assert f"chmod go-w {path}" in detail["error"]
    checked = subprocess.run([sys.executable, "-m", "pipelined", "check", str(daemon.conf_dir)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode != 0 and "is writable by others" in checked.stdout + checked.stderr

    path.chmod(0o644)  # fixed: a reload loads it (the content did not change, its mode did)
    assert daemon.client.post("/reload").status_code == 200
    assert daemon.pipeline("shell")["state"] == "running"

    daemon.conf_dir.chmod(0o777)  # anyone could now add a file: every pipeline is refused
    try:
        assert daemon.client.post("/reload").status_code == 200
        detail = daemon.pipeline("shell")
        assert f"refused: its directory ({daemon.conf_dir}, mode 0777) is writable by others" in detail["error"]
        assert detail["state"] == "running"  # the running version keeps running
    finally:
        daemon.conf_dir.chmod(0o755)
    assert daemon.stop() == 0


def test_a_group_writable_file_of_a_shared_group_is_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    path = daemon.write_pipeline("shell", reader())
    os.chown(path, -1, 65534)  # nogroup: not root's own group
    path.chmod(0o664)
    daemon.start()
    assert "is writable by group 'nogroup'" in daemon.pipeline("shell")["error"]
    assert daemon.stop() == 0


# -- finding 7 --------------------------------------------------------------------------------------
def test_files_the_daemon_creates_are_private_whatever_the_umask(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    daemon.write_pipeline("shell", reader(out="out/deeper/lines.jsonl"))
    daemon.write_pipeline("follow", READER.replace("read_lines", "tail_file").replace("auto_start = false\n", "")
                          .format(out="out/follow.jsonl", trigger_args="", extra=', start = "beginning"')
                          .replace("in/none.txt", "in/ok.txt"))  # fmt: skip
    (daemon.state_dir / "in").mkdir()
    (daemon.state_dir / "in" / "ok.txt").write_text("one\n")
    failing = daemon.write_pipeline("dead", reader(out="/nowhere/x.jsonl"))
    assert failing.exists()
    old = os.umask(0)  # the daemon inherits the loosest umask there is
    try:
        daemon.start()
    finally:
        os.umask(old)
    run_of(daemon, "shell", {"path": "in/ok.txt"})
    run_of(daemon, "dead", {"path": "in/ok.txt"})  # one dead letter, holding the item
    wait_for(lambda: (daemon.state_dir / "out" / "follow.jsonl").exists(), 10, what="follow wrote")
    files = {
        "out/deeper/lines.jsonl": 0o600, "out/deeper": 0o700, "out": 0o700, "out/follow.jsonl": 0o600,
        "dead-letters/dead.jsonl": 0o600, "dead-letters": 0o700, "tail/follow-lines.offset": 0o600, "tail": 0o700,
    }  # fmt: skip
    for name, mode in files.items():
        assert stat.S_IMODE((daemon.state_dir / name).stat().st_mode) == mode, name
    assert daemon.stop() == 0


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_the_state_dir_it_creates_is_private(tmp_path: Path, umask: int) -> None:
    state = tmp_path / "fresh-state"
    daemon = DaemonProcess(tmp_path / "d", extra_args=["--state-dir", str(state)])
    old = os.umask(umask)
    try:
        daemon.start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    finally:
        daemon.close()
