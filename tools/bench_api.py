"""API latency under load (targets: p99 <= 20 ms for both), against a real daemon.

    .venv/bin/python tools/bench_api.py [--requests 400] [--triggers 100]

Starts `pipelined run` (tests/harness.py) with two pipelines:
- `busy`: W1 flat out — an endless producer of ints → x+1 → x*2 → a summing consumer, one thread
  per stage, so stage threads compete with the API for the GIL all the time;
- `probe`: a producer (auto_start = false) that appends the wall-clock time of its first yield to
  a file, then one consumer.
Then measures, over HTTP on loopback with a keep-alive client:
- GET /stats: request → full response;
- trigger → first item: POST /pipelines/probe/stages/stamp/trigger sent → the producer's first
  yield (the time it wrote), i.e. API + run start + producer start.
Prints p50 / p90 / p99 / max and the ratio of p99 to the 20 ms target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from harness import DaemonProcess, wait_for  # noqa: E402

TARGET_MS = 20.0

STAGES = """
import time

def endless():
    i = 0
    while True:
        yield i
        i += 1

def inc(x):
    return x + 1

def double(x):
    return x * 2

TOTAL = [0]

def total(x):
    TOTAL[0] += x

def stamp(path, token):
    with open(path, "a") as fh:
        fh.write(f"{token} {time.time()}\\n")
    yield token

def sink(x):
    pass
"""

BUSY = """
description = "W1 flat out"
max_threads = 4

[[stage]]
name = "src"
kind = "producer"
call = "benchstages:endless"

[[stage]]
name = "inc"
call = "benchstages:inc"

[[stage]]
name = "double"
call = "benchstages:double"

[[stage]]
name = "sum"
kind = "consumer"
call = "benchstages:total"
"""

PROBE = """
description = "trigger latency probe"

[[stage]]
name = "stamp"
kind = "producer"
call = "benchstages:stamp"
auto_start = false
args = {{ path = "{path}", token = 0 }}

[[stage]]
name = "sink"
kind = "consumer"
call = "benchstages:sink"
"""


def summary(label: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    p99 = pct(99)
    verdict = "ok" if p99 <= TARGET_MS else "OVER TARGET"
    print(
        f"{label:<26} n={len(ordered):<5} p50 {pct(50):6.2f} ms  p90 {pct(90):6.2f} ms  p99 {p99:6.2f} ms  "
        f"max {ordered[-1]:6.2f} ms  mean {statistics.fmean(ordered):6.2f} ms | p99/target "
        f"{p99 / TARGET_MS:.2f} ({verdict})"
    )


def bench_stats(daemon: DaemonProcess, requests: int) -> list[float]:
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        response = daemon.client.get("/stats")
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text
    return samples


def bench_trigger(daemon: DaemonProcess, stamps: Path, triggers: int) -> list[float]:
    samples = []
    for token in range(1, triggers + 1):
        sent = time.time()
        response = daemon.client.post(
            "/pipelines/probe/stages/stamp/trigger", json={"args": {"token": token}}
        )
        assert response.status_code == 202, response.text

        def stamped(token: int = token) -> float | None:
            for line in stamps.read_text().splitlines():
                got, at = line.split()
                if int(got) == token:
                    return float(at)
            return None

        first_item = wait_for(stamped, timeout=10, interval=0.001, what=f"first item of trigger {token}")
        samples.append((first_item - sent) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="GET /stats requests (default 400)")
    parser.add_argument("--triggers", type=int, default=100, help="triggers (default 100)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        daemon = DaemonProcess(Path(tmp), log_level="warning")
        stamps = Path(tmp) / "stamps.txt"
        stamps.write_text("")
        daemon.write_module("benchstages", STAGES)
        daemon.write_pipeline("busy", BUSY)
        daemon.write_pipeline("probe", PROBE.format(path=stamps))
        try:
            daemon.start()
            wait_for(lambda: daemon.client.get("/pipelines/busy/stats").json()["stages"]["sum"]["items_in"] > 10_000,
                     timeout=20, what="W1 flowing")  # fmt: skip
            before = daemon.client.get("/pipelines/busy/stats").json()["stages"]["sum"]["items_in"]
            began = time.monotonic()
            bench_stats(daemon, 50)  # warm-up
            stats_ms = bench_stats(daemon, options.requests)
            trigger_ms = bench_trigger(daemon, stamps, options.triggers)
            after = daemon.client.get("/pipelines/busy/stats").json()["stages"]["sum"]["items_in"]
            rate = (after - before) / (time.monotonic() - began)
            print(f"W1 in the background: {rate:,.0f} items/s through busy/sum while measuring")
            summary("GET /stats", stats_ms)
            summary("trigger -> first item", trigger_ms)
        finally:
            daemon.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
