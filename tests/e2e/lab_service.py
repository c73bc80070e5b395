"""The installed service inside a SystemdLab: wheelhouse, install, API calls with the token.

    lab = installed_lab(tmp_path_factory)     # booted, `tools/install` run (skips where it cannot)
    code, body = api(lab, "/pipelines")       # curl inside the lab, with the installed token
    show(lab, "MainPID")                      # systemctl show -p ... --value pipelined
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systemd_lab import SystemdLab

REPO = Path(__file__).resolve().parents[2]
WHEEL_CACHE = Path("/var/cache/pipelined-e2e")
TOKEN_FILE = "/etc/pipelined/api.token"
API = "http://127.0.0.1:8470"


def wheelhouse_dir() -> Path:
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    return WHEEL_CACHE / f"wheels-{key}"


def wheelhouse() -> Path:
    """Wheels of pipelined and its dependencies (the lab has no network); deps cached by pyproject."""
    house = wheelhouse_dir()
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house)]
    if not (house / ".complete").exists():
        done = subprocess.run([*pip, str(REPO)], capture_output=True, text=True, timeout=600, cwd="/tmp")
        if done.returncode != 0:
            pytest.skip(f"cannot build the wheelhouse (offline?): {done.stderr[-500:]}")
        (house / ".complete").write_text("")
    for old in house.glob("pipelined-*.whl"):
        old.unlink()
    done = subprocess.run([*pip, "--no-deps", str(REPO)], capture_output=True, text=True, timeout=300, cwd="/tmp")
    assert done.returncode == 0, done.stderr
    shutil.rmtree(REPO / "build", ignore_errors=True)
    return house


def install(lab: SystemdLab) -> None:
    lab.run("env", f"PIPELINED_WHEELS={wheelhouse_dir()}", str(REPO / "tools" / "install"), check=True, timeout=480)


def boot_installed(work: Path) -> SystemdLab:
    """A booted lab with tools/install run in it (pytest.skip where the lab cannot run)."""
    reason = SystemdLab.unavailable()
    if reason:
        pytest.skip(f"systemd lab unavailable: {reason}")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 to build the server venv from")
    wheelhouse()
    lab = SystemdLab(work)
    try:
        lab.boot()
    except Exception as exc:  # noqa: BLE001 - a machine where the lab cannot boot skips
        lab.shutdown()
        pytest.skip(f"systemd lab did not boot: {exc}")
    try:
        install(lab)
    except BaseException:
        lab.shutdown()
        raise
    return lab


def token(lab: SystemdLab) -> str:
    return lab.path(TOKEN_FILE).read_text().strip()


def api(lab: SystemdLab, path: str, method: str = "GET", *curl: str, auth: bool = True,
        base: str = API) -> tuple[int, object]:  # fmt: skip
    """(status, JSON body or text) of a curl run inside the lab, with the installed token."""
    headers = ["-H", f"Authorization: Bearer {token(lab)}"] if auth else []
    done = lab.run("curl", "-s", "-X", method, *headers, *curl, "-o", "/dev/stdout", "-w", "\n%{http_code}",
                   f"{base}{path}", timeout=30)  # fmt: skip
    body, _, code = done.stdout.rpartition("\n")
    try:
        return int(code), json.loads(body) if body else None
    except ValueError:
        return int(code or 0), body


def show(lab: SystemdLab, prop: str) -> str:
    return lab.run("systemctl", "show", "-p", prop, "--value", "pipelined").stdout.strip()
