"""Start time at scale: N small pipelines → `/ready` (target: 1,000 ready in ≤ 5 s, growing linearly).

Starts a real daemon (tests/harness.py) on a conf dir of N pipelines — each a producer, a
processor and a consumer (built-in stages, one thread each) — for N = 0, 50 and 1,000 in the
same run, and measures from the process' start to `GET /ready` answering 200: the wall time,
and the daemon's own CPU time until then (/proc; what the wall time is on a machine with a core
to spare, whatever else runs). Prints each, the cost per pipeline above the empty daemon at 50
and at 1,000 and their ratio (1.0 = linear), and the 1,000 figures against the 5 s target.
`--profile FILE` writes a cProfile of the daemon for the largest size (`python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from harness import DaemonProcess  # noqa: E402

TARGET_S = 5.0
SIZES = (0, 50, 1000)

PIPELINE = """
description = "small pipeline {i}"

[[stage]]
name = "make"
kind = "producer"
call = "pipelined.stages:count"
args = {{ stop = 3 }}
auto_start = false

[[stage]]
name = "pause"
call = "pipelined.stages:sleep"
args = {{ seconds = 0 }}

[[stage]]
name = "out"
kind = "consumer"
call = "pipelined.stages:log"
args = {{ level = "debug" }}
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_ready(n: int, profile: Path | None = None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        daemon = DaemonProcess(Path(tmp), log_level="warning", settings="[daemon]\nmax_threads = 64\n")
        for i in range(n):
            daemon.write_pipeline(f"p{i:04d}", PIPELINE.format(i=i))
        if profile is not None:
            command = daemon.command
            daemon.command = lambda: [command()[0], "-m", "cProfile", "-o", str(profile), *command()[1:]]  # type: ignore[method-assign]
        began = time.monotonic()
        daemon.start(timeout=300)
        took, cpu = time.monotonic() - began, cpu_seconds(daemon.pid)
        listed = daemon.client.get("/pipelines").json()
        assert len(listed) == n and all(p["state"] == "running" for p in listed), listed[:3]
        assert daemon.stop(timeout=120) == 0
        daemon.close()
        return took, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, help="cProfile output of the daemon for the largest size")
    args = parser.parse_args()
    times = {n: time_to_ready(n, args.profile if n == max(SIZES) else None) for n in SIZES}
    base_wall, base_cpu = times[0]
    for n in SIZES:
        wall, cpu = times[n]
        extra = f"; per pipeline {(wall - base_wall) / n * 1000:5.1f} ms wall, {(cpu - base_cpu) / n * 1000:4.1f} ms CPU" if n else ""
        print(f"{n:5d} pipelines: ready in {wall:6.2f} s wall, {cpu:6.2f} s CPU{extra}")
    small, large = SIZES[1], SIZES[2]
    per = {n: (times[n][1] - base_cpu) / n for n in (small, large)}
    print(f"CPU per pipeline, {large} vs {small}: {per[large] / per[small]:.2f}x (1.0 = linear)")
    wall, cpu = times[large]
    print(f"{large} pipelines vs the {TARGET_S:g} s target: {wall / TARGET_S:.2f}x wall, {cpu / TARGET_S:.2f}x CPU "
          f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
