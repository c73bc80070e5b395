"""A real systemd as PID 1 of private namespaces, for end-to-end tests of the unit.

    lab = SystemdLab(tmp_path)          # SystemdLab.unavailable() says why it cannot run here
    lab.boot()                          # ~0.5 s; returns when `systemctl is-system-running` is up
    lab.run("systemctl", "start", "pipelined")   # CompletedProcess, inside every lab namespace
    lab.path("/var/lib/pipelined/x")    # a path of the lab's filesystem, readable from the host
    lab.shutdown()                      # poweroff, then SIGKILL by PID, remove the cgroups

The lab's root is a tmpfs-backed overlay of the host's "/" (host files are visible, writes vanish),
with its own /proc, /dev, /run, /tmp, a read-only /sys and a cgroup2 tree rooted at a child cgroup
of this process's own cgroup. The host's PID 1, /etc, /run and network are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

INIT_SCRIPT = Path(__file__).with_name("lab_init.sh")
LAB_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}


class LabError(RuntimeError):
    pass


def _cgroup2_mount() -> Path | None:
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    return None


def _own_cgroup2_path() -> str:
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


class SystemdLab:
    def __init__(self, work: Path, boot_timeout: float = 30.0) -> None:
        self.work = Path(work)
        self.boot_timeout = boot_timeout
        self.outer: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        mount = _cgroup2_mount()
        name = f"pipelined-e2e-{uuid.uuid4().hex[:8]}"
        base = (mount or Path("/nonexistent")) / _own_cgroup2_path().lstrip("/")
        self.cgroup = base / name
        self.parking_cgroup = base / f"{name}.outer"

    @staticmethod
    def unavailable() -> str | None:
        """Why the lab cannot boot here (None when it can)."""
        if os.geteuid() != 0:
            return "needs root"
        for tool in ("unshare", "nsenter", "setpriv", "systemctl"):
            if shutil.which(tool) is None:
                return f"{tool} not installed"
        if not Path("/lib/systemd/systemd").exists():
            return "/lib/systemd/systemd not installed"
        if _cgroup2_mount() is None:
            return "no cgroup2 mount"
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "no overlayfs"
        return None

    # -- lifecycle -----------------------------------------------------------------------------
    def boot(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "console.log").write_bytes(b"")
        self.cgroup.mkdir()
        self.parking_cgroup.mkdir()
        procs = self.cgroup / "cgroup.procs"

        with open(self.work / "init.log", "wb") as init_log:
            self.outer = self._start_init(init_log, procs)
        self.pid1 = self._wait_for_pid1()
        # cgroup2: no processes in an inner node; the unshare parent leaves the lab's root cgroup
        with contextlib.suppress(OSError):
            (self.parking_cgroup / "cgroup.procs").write_text(str(self.outer.pid))
        self._wait_until_up()

    def _start_init(self, log: Any, procs: Path) -> subprocess.Popen[bytes]:
        def enter_lab_cgroup() -> None:  # runs in the child before exec: unshare starts inside it
            procs.write_text("0")

        return subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup", "--net",
             "--propagation", "private", "--", "bash", str(INIT_SCRIPT)],
            env={**LAB_ENV, "LAB_WORK": str(self.work), "LAB_BIND": str(Path(__file__).resolve().parents[2])},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=enter_lab_cgroup, start_new_session=True,
        )  # fmt: skip

    def _wait_for_pid1(self) -> int:
        assert self.outer is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.outer.pid}/task/{self.outer.pid}/children")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    return int(pids[0])
            if self.outer.poll() is not None:
                break
            time.sleep(0.02)
        raise LabError(f"the lab's init did not start: {self.logs()}")

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self.outer is not None and self.outer.poll() is not None:
                raise LabError(f"systemd exited during boot: {self.logs()}")
            if Path(f"/proc/{self.pid1}/root/run/systemd/private").exists():
                state = self.run("systemctl", "is-system-running", timeout=5).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.05)
        raise LabError(f"systemd not up after {self.boot_timeout}s (state {state!r}): {self.logs()}")

    def shutdown(self) -> None:
        if self.pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGRTMIN + 4)  # systemd: poweroff
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{self.pid1}").exists():
                time.sleep(0.05)
        if self.outer is not None and self.outer.poll() is None:
            self.outer.kill()  # --kill-child: the whole pid namespace dies with it
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.outer.wait(10)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        for top in (self.cgroup, self.parking_cgroup):
            if not top.exists():
                continue
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 5
            while top.exists() and time.monotonic() < deadline:
                for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
                time.sleep(0.05)

    # -- inside ----------------------------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 60, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a command inside every namespace of the lab (as its root)."""
        assert self.pid1 is not None, "lab not booted"
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
             "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in LAB_ENV.items()), *argv],
            capture_output=True, text=True, timeout=timeout, input=input,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def path(self, inside: str) -> Path:
        """A path of the lab's filesystem as the host sees it."""
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str) -> None:
        self.run("sh", "-c", f'mkdir -p "$(dirname "{inside}")" && cat > "{inside}"', input=text, check=True)

    def logs(self) -> str:
        parts = []
        for name in ("init.log", "console.log"):
            with contextlib.suppress(OSError):
                parts.append((self.work / name).read_text(errors="replace")[-3000:])
        return "\n".join(parts)
