"""`tools/run` and `tools/test` from a fresh clone, with arguments, as a newcomer and CI use them.

Arguments of `tools/run` go to `pipelined run` only and those of `tools/test` to pytest only:
`tools/_setup.sh` must never read them (once it took `--listen` as a pip extra and `pip install
-e .[--listen]` failed). Slow (a fresh `.venv` is installed, from the machine's wheels and pip's
cache), so both scripts share one clone: `tools/test` first installs `.[test]`, then `tools/run` finds
it installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness import REPO_ROOT, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

INSTALL_TIMEOUT = 600


def _fresh_clone(dest: Path) -> Path:
    """`git clone` of this repository, plus the uncommitted changes of the tree under test."""
    clone = dest / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    diff = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "diff", "HEAD", "--binary"], check=True, capture_output=True, timeout=60
    ).stdout
    if diff.strip():
        subprocess.run(["git", "-C", str(clone), "apply", "--whitespace=nowarn"], input=diff, check=True, timeout=60)
    return clone


def _clean_env() -> dict[str, str]:
    """The environment of a newcomer's shell: no venv, no PYTHONPATH of this test run."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def _without_pip_noise(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "WARNING: Location" not in line)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fresh_clone(tmp_path_factory.mktemp("tools"))


def test_tools_test_passes_its_arguments_to_pytest_only(clone: Path) -> None:
    result = subprocess.run(
        ["./tools/test", "-v", "-p", "no:cacheprovider", "tests/unit/config/test_config_durations.py"],
        cwd=clone, env=_clean_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )  # fmt: skip
    out = _without_pip_noise(result.stdout + result.stderr)
    assert result.returncode == 0, out[-4000:]
    ran = [line for line in result.stdout.splitlines() if "::" in line and "PASSED" in line]
    assert ran, out[-4000:]
    assert all(line.startswith("tests/unit/config/test_config_durations.py::") for line in ran), ran


def test_tools_run_passes_its_arguments_to_the_daemon_only(clone: Path) -> None:
    port = free_port()
    log_path = clone / "run.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["./tools/run", "--listen", f"127.0.0.1:{port}", "--log-level", "debug"],
            cwd=clone, env=_clean_env(), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:

        def answering() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: proc.poll() is not None or answering(), timeout=INSTALL_TIMEOUT, interval=0.2,
                 what="tools/run answering on the given port")  # fmt: skip
        assert proc.poll() is None, f"tools/run exited {proc.returncode}:\n{_without_pip_noise(log_path.read_text())[-4000:]}"
        # --log-level debug reached the daemon too
        wait_for(lambda: "DEBUG" in log_path.read_text(errors="replace"), timeout=30, what="debug lines")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, _without_pip_noise(log_path.read_text())[-4000:]
    assert (clone / ".venv" / "bin" / "pipelined").exists()
