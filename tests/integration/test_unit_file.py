"""systemd/pipelined.service: `systemd-analyze verify` silent, security exposure <= 1.5, required keys."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "pipelined.service"
INSTALLED_BINARY = "/opt/pipelined/bin/pipelined"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def _unit_with_local_binary(tmp_path: Path) -> Path:
    """The unit with ExecStart/ExecReload pointing at a binary that exists here (verify checks it)."""
    local = Path(sys.executable).with_name("pipelined")
    if not local.exists():
        local = Path(sys.executable)
    text = UNIT.read_text().replace(INSTALLED_BINARY, str(local))
    copy = tmp_path / "pipelined.service"
    copy.write_text(text)
    return copy


def _service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_required_settings() -> None:
    service = _service_section()
    assert service["Type"] == ["notify"]
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} run"]
    assert service["ExecReload"] == [f"+{INSTALLED_BINARY} reload"]  # as root: it reads the token file
    assert service["Restart"] == ["on-failure"]
    assert int(service["WatchdogSec"][0]) > 0
    assert service["CapabilityBoundingSet"] == [""]
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert "@system-service" in service["SystemCallFilter"]
    for key in ("ConfigurationDirectory", "StateDirectory", "RuntimeDirectory"):
        assert service[key] == ["pipelined"]
    assert service.get("DynamicUser") == ["yes"] or "User" in service


def test_hardening_settings_of_issue_16() -> None:
    service = _service_section()
    # the socket's directory: only the service (and its group) may reach /run/pipelined/api.sock
    assert service["RuntimeDirectoryMode"] == ["0750"]
    assert service["StateDirectoryMode"] == ["0700"]
    assert service["UMask"] == ["0077"]
    # a documented memory ceiling for the whole service, workers included
    (memory_max,) = service["MemoryMax"]
    assert re.fullmatch(r"\d+[KMG]", memory_max), memory_max
    # the API token comes as a systemd credential ($CREDENTIALS_DIRECTORY/api.token)
    assert service["LoadCredential"] == ["api.token:/etc/pipelined/api.token"]
    docs = (REPO / "docs" / "operations.md").read_text() + (REPO / "docs" / "security.md").read_text()
    assert f"MemoryMax={memory_max}" in docs


def test_stop_timeout_exceeds_default_drain_timeout() -> None:
    from pipelined.config.settings import Settings

    stop = _service_section()["TimeoutStopSec"][0]
    seconds = int(re.fullmatch(r"(\d+)s?", stop).group(1))  # type: ignore[union-attr]
    assert seconds > Settings().daemon.drain_timeout + 10


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser.has_section("Install") and parser["Install"]["WantedBy"] == "multi-user.target"


@needs_analyze
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@needs_analyze
def test_security_exposure_at_most_1_5(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=15", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for pipelined\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= 1.5
    assert done.returncode == 0, done.stderr


RAY_DROPIN = REPO / "systemd" / "pipelined-ray.conf"


def _with_ray_dropin(tmp_path: Path) -> Path:
    unit = _unit_with_local_binary(tmp_path)
    dropins = tmp_path / "pipelined.service.d"
    dropins.mkdir()
    (dropins / "ray.conf").write_text(RAY_DROPIN.read_text())
    return unit


def test_ray_dropin_relaxes_only_what_ray_needs() -> None:
    active = [line.strip() for line in RAY_DROPIN.read_text().splitlines()
              if line.strip() and not line.strip().startswith(("#", ";"))]
    assert active == ["[Service]", "ProcSubset=all", "TimeoutStartSec=300"]


@needs_analyze
def test_unit_with_the_ray_dropin_verifies_and_stays_at_most_2(tmp_path: Path) -> None:
    unit = _with_ray_dropin(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert "full access to non-process /proc files" in done.stdout  # the drop-in was read
    match = re.search(r"Overall exposure level for pipelined\.service: (\d+\.\d+)", done.stdout)
    assert match and float(match.group(1)) <= 2.0, done.stdout[-2000:]
