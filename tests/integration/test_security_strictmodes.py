"""Everything the daemon runs or trusts must be writable by root or its own user only (issue 16,
second review): whoever else may change it runs code as the daemon's user.

Reproduced before the fix, each accepted without a word:
- a pipeline file owned by another user (`nobody`, mode 0644: nobody may rewrite it);
- a pipeline file that is a symlink to a file in a directory every user may write;
- a `python_path` directory every user may write (drop a module of the imported name);
- a settings file every user may write (point `conf_dir` anywhere);
- a state dir every user may write (the disk buffer is pickles, replayed at start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import DaemonProcess

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")

PIPELINE = """
[[stage]]
name = "keep"
kind = "consumer"
call = "pipelined.stages:log"
"""

CODE_PIPELINE = """
python_path = ["{code}"]

[[stage]]
name = "keep"
kind = "consumer"
call = "planted:keep"
"""

PLANTED = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")

def keep(item):
    return None
"""


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelined", "check", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@needs_root
def test_a_pipeline_file_owned_by_another_user_is_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon()
    path = daemon.write_pipeline("owned", PIPELINE)
    path.chmod(0o644)
    os.chown(path, NOBODY, -1)
    daemon.start()
    detail = daemon.pipeline("owned")
    assert detail["state"] == "failed"
    assert f"refused: the file ({path}, mode 0644) is owned by user 'nobody'" in detail["error"]
    assert f"chown root {path}" in detail["error"]
    checked = check(daemon.conf_dir)
    assert checked.returncode != 0 and "is owned by user 'nobody'" in checked.stdout + checked.stderr

    os.chown(path, 0, -1)  # fixed: a reload loads it
    assert daemon.client.post("/reload").status_code == 200
    assert daemon.pipeline("owned")["state"] == "running"

    os.chown(daemon.conf_dir, NOBODY, -1)  # nobody may add a file to the conf dir now
    try:
        assert daemon.client.post("/reload").status_code == 200
        detail = daemon.pipeline("owned")
        assert f"refused: its directory ({daemon.conf_dir}, mode 0755) is owned by user 'nobody'" in detail["error"]
        assert detail["state"] == "running"  # the running version keeps running
    finally:
        os.chown(daemon.conf_dir, 0, -1)
    assert daemon.stop() == 0


def test_a_symlinked_pipeline_file_is_checked_where_it_really_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # any user may replace what is in it
    target = shared / "real.toml"
    target.write_text(PIPELINE)
    target.chmod(0o644)
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "linked.toml").symlink_to(target)
    checked = check(conf)
    assert checked.returncode != 0, checked.stdout
    assert f"refused: the directory it links into ({shared}, mode 0777) is writable by others" in checked.stdout


def test_a_python_path_others_may_write_is_refused_before_any_import(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    code.chmod(0o777)
    marker = tmp_path / "imported"
    (code / "planted.py").write_text(PLANTED.format(marker=str(marker)))
    daemon = make_daemon()
    daemon.write_pipeline("coded", CODE_PIPELINE.format(code=code))
    daemon.start()
    detail = daemon.pipeline("coded")
    assert detail["state"] == "failed"
    assert f"refused: python_path {code} (mode 0777) is writable by others" in detail["error"]
    assert not marker.exists(), "the module was imported from a directory others may write"

    code.chmod(0o755)  # fixed: a reload imports it
    assert daemon.client.post("/reload").status_code == 200
    assert daemon.pipeline("coded")["state"] == "running"
    assert marker.exists()
    assert daemon.stop() == 0


def test_a_settings_file_others_may_write_is_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(settings="[daemon]\nmax_threads = 8\n")
    daemon.settings_file.chmod(0o666)
    daemon.start(wait=None)
    assert daemon.wait_exit(30) == 2
    assert (
        f"{daemon.settings_file}: refused: the settings file ({daemon.settings_file}, mode 0666) is writable"
        " by others" in daemon.logs()
    )


@pytest.mark.parametrize("owner", ["others", "nobody"])
def test_a_state_dir_others_may_write_is_refused(make_daemon: Callable[..., DaemonProcess], owner: str) -> None:
    if owner == "nobody" and os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    daemon = make_daemon()
    if owner == "others":
        daemon.state_dir.chmod(0o777)
        expected = "(mode 0777) is writable by others"
    else:
        os.chown(daemon.state_dir, NOBODY, -1)
        expected = "is owned by user 'nobody'"
    daemon.start(wait=None)
    assert daemon.wait_exit(30) == 2
    logs = daemon.logs()
    assert f"[daemon]: state_dir: refused: {daemon.state_dir}" in logs and expected in logs, logs


def test_a_module_others_may_write_in_a_private_python_path_is_refused(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    marker = tmp_path / "imported"
    module = code / "planted.py"
    module.write_text(PLANTED.format(marker=str(marker)))
    module.chmod(0o666)
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "coded.toml").write_text(CODE_PIPELINE.format(code=code))
    checked = check(conf)
    assert checked.returncode != 0, checked.stdout
    assert f"refused: python_path {module} (mode 0666) is writable by others" in checked.stdout
    assert not marker.exists()


def test_a_put_naming_a_python_path_others_may_write_imports_nothing(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    code.chmod(0o777)
    marker = tmp_path / "imported"
    (code / "planted.py").write_text(PLANTED.format(marker=str(marker)))
    daemon = make_daemon(token="t0k3n-for-put", settings="[api]\nconfig_write = true\n").start()
    r = daemon.client.put("/pipelines/coded", content=CODE_PIPELINE.format(code=code),
                          headers={"Content-Type": "application/toml"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert f"refused: python_path {code} (mode 0777) is writable by others" in r.text
    assert not marker.exists(), "validating the PUT imported a module from a directory others may write"
    assert not (daemon.conf_dir / "coded.toml").exists()
    assert daemon.stop() == 0


@needs_root
def test_a_token_file_owned_by_another_user_is_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(token="owned-by-nobody")
    token_file = daemon.base_dir / "api.token"
    os.chown(token_file, NOBODY, -1)  # 0600, but nobody reads and rewrites the API's token
    daemon.start(wait=None)
    assert daemon.wait_exit(30) == 2
    assert f"{token_file} is owned by user 'nobody'" in daemon.logs()


@needs_root
@pytest.mark.parametrize("how", ["owner", "group"])
def test_a_socket_directory_another_user_may_write_is_refused(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    if how == "owner":  # nobody could replace the socket with one of its own and read the token
        os.chown(directory, NOBODY, -1)
        expected = "is owned by user 'nobody'"
    else:
        os.chown(directory, -1, NOBODY)  # nogroup
        directory.chmod(0o770)
        expected = "is writable by group 'nogroup'"
    daemon = DaemonProcess(tmp_path / "d", listen=f"unix:{directory / 'api.sock'}")
    try:
        daemon.start(wait=None)
        assert daemon.wait_exit(30) == 3
        assert f"its directory {directory} {expected} (mode" in daemon.logs(), daemon.logs()
        assert not (directory / "api.sock").exists()
    finally:
        daemon.close()


def test_a_conf_dir_inside_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename conf.d's parent away and plant another
    conf = shared / "pipelined" / "conf.d"
    conf.mkdir(parents=True)
    (conf / "keep.toml").write_text(PIPELINE)
    checked = check(conf)
    assert checked.returncode != 0, checked.stdout
    assert f"refused: a directory above it ({shared}, mode 0777) is writable by others" in checked.stdout

    shared.chmod(0o1777)  # sticky, like /tmp: nobody may move what is not theirs
    assert check(conf).returncode == 0
