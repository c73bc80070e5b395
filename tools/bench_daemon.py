"""W1 and its latency row through a real daemon, as ratios to a plain loop measured in the same run.

    .venv/bin/python tools/bench_daemon.py [--items 200000] [--rounds 5] [--only w1,lat]

Starts `pipelined run` (tests/harness.py) with two pipelines:
- `w1`: producer `source(n)` (auto_start = false) → `x+1` → `x*2` → a summing consumer, one
  thread per stage;
- `lat`: a producer pacing 2,000 items at 1,000 items/s (each item is its perf_counter() at the
  yield) → two identity stages → a consumer that records perf_counter() − item.
W1: each round runs a plain loop over the same functions in this process, then
`POST /pipelines/w1/stages/src/trigger?wait=true`, and times the daemon by the run's own
`started_at` / `finished_at`. Prints every round's ratio (plain time / daemon time), the median
and the best, and the load average before and after (the machine is shared). Also the ratio of
CPU times (the plain loop's thread vs every thread of the daemon during the whole request, from
/proc/<pid>/task/*/schedstat): on a loaded machine wall-clock ratios swing 2x either way, CPU
time much less.
LAT: p50 / p99 from the producer's yield to the consumer, inside the daemon (targets: p50 ≤
100 µs, p99 ≤ 1 ms).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from harness import DaemonProcess, wait_for  # noqa: E402

STAGES = '''
import time

TOTAL = [0]


def source(n=200000):
    yield from range(n)


def inc(x):
    return x + 1


def double(x):
    return x * 2


def total(x):
    TOTAL[0] += x


def paced(n=2000, rate=1000.0):
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for _ in range(n):
        next_at += interval
        while (now := time.perf_counter()) < next_at:
            if next_at - now > 0.0003:
                time.sleep(max(0.0, next_at - now - 0.0002))
        yield time.perf_counter()


def ident(x):
    return x


SAMPLES = []


def stamp(x, path=""):
    SAMPLES.append(time.perf_counter() - x)
    if len(SAMPLES) % 500 == 0:
        with open(path, "w") as fh:
            fh.write("\\n".join(f"{s:.9f}" for s in SAMPLES))
'''

W1 = """
max_threads = 4

[[stage]]
name = "src"
kind = "producer"
call = "benchdaemon:source"
auto_start = false

[[stage]]
name = "inc"
call = "benchdaemon:inc"

[[stage]]
name = "double"
call = "benchdaemon:double"

[[stage]]
name = "sum"
kind = "consumer"
call = "benchdaemon:total"
"""

LAT = """
max_threads = 4

[[stage]]
name = "src"
kind = "producer"
call = "benchdaemon:paced"
auto_start = false

[[stage]]
name = "a"
call = "benchdaemon:ident"

[[stage]]
name = "b"
call = "benchdaemon:ident"

[[stage]]
name = "sum"
kind = "consumer"
call = "benchdaemon:stamp"
args = {{ path = "{path}" }}
"""


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process `pid` (ns resolution, /proc schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # a thread that just ended
    return total / 1e9


def seconds_between(started: str, finished: str) -> float:
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def w1(daemon: DaemonProcess, fns: object, n: int, rounds: int) -> None:
    source, inc, double, total = (getattr(fns, name) for name in ("source", "inc", "double", "total"))
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    print(f"W1   load average before: {load()}")
    for i in range(rounds):
        began = time.perf_counter()
        cpu_began = time.thread_time()
        for x in source(n):
            total(double(inc(x)))
        plain = time.perf_counter() - began
        plain_cpu = time.thread_time() - cpu_began
        daemon_cpu = cpu_seconds(daemon.pid)
        r = daemon.client.post("/pipelines/w1/stages/src/trigger?wait=true&timeout=300", json={"args": {"n": n}},
                               timeout=320)
        daemon_cpu = cpu_seconds(daemon.pid) - daemon_cpu
        assert r.status_code == 200, r.text
        run = r.json()
        assert run["state"] == "completed" and run["items"]["finished"] == n, run
        took = seconds_between(run["started_at"], run["finished_at"])
        ratios.append(plain / took)
        cpu_ratios.append(plain_cpu / daemon_cpu)
        print(f"W1   round {i + 1}: plain {n / plain:>12,.0f} items/s | daemon {n / took:>12,.0f} items/s "
              f"| ratio {plain / took:.3f} | CPU: plain {plain_cpu * 1e3:.0f} ms, daemon {daemon_cpu * 1e3:.0f} ms "
              f"(whole request), ratio {plain_cpu / daemon_cpu:.3f}")
    print(f"W1   through the daemon: ratio median {statistics.median(ratios):.3f}, best {max(ratios):.3f}, "
          f"worst {min(ratios):.3f} over {rounds} rounds (target median >= 0.75); CPU-time ratio median "
          f"{statistics.median(cpu_ratios):.3f} | load average after: {load()}")


def latency(daemon: DaemonProcess, samples: Path) -> None:
    r = daemon.client.post("/pipelines/lat/stages/src/trigger?wait=true&timeout=60", json={}, timeout=70)
    assert r.status_code == 200 and r.json()["state"] == "completed", r.text
    values = wait_for(lambda: [float(v) for v in samples.read_text().split()] if samples.exists() else [],
                      timeout=10, what="latency samples")
    values = values[len(values) // 10:]  # the first 10 % warm the stages up (per-item averages)
    values.sort()
    p50 = values[len(values) // 2] * 1e6
    p99 = values[int(len(values) * 0.99)] * 1e6
    print(f"LAT  1,000 items/s through the daemon, yield -> consumer: p50 {p50:.0f} us (target <= 100) | "
          f"p99 {p99:.0f} us (target <= 1000) | n={len(values)} | load average {load()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="w1,lat")
    opts = parser.parse_args()
    only = set(opts.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        daemon = DaemonProcess(Path(tmp), log_level="warning")
        samples = Path(tmp) / "latency.txt"
        daemon.write_module("benchdaemon", STAGES)
        daemon.write_pipeline("w1", W1)
        daemon.write_pipeline("lat", LAT.format(path=samples))
        sys.path.insert(0, str(daemon.modules_dir))
        fns = importlib.import_module("benchdaemon")
        try:
            daemon.start()
            if "w1" in only:
                w1(daemon, fns, opts.items, opts.rounds)
            if "lat" in only:
                latency(daemon, samples)
        finally:
            daemon.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
