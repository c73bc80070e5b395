"""Ray executor benchmarks; ratios to baselines measured in the same run (docs/performance.md).

    .venv/bin/python tools/bench_ray.py [--items 2000]

- W3: 2,000 items of ~1 ms CPU. One local thread (baseline), `processes = 2` (the worker pool)
  and `executor = "ray"` with `replicas = 2`, each fed by as many threads as the engine runs for
  it, in chunks the engine's take-sizing would pick. Target: Ray ≥ 1.4× the thread.
- W1: doubling 200,000 ints. The plain loop (baseline) vs the middle stage on Ray (replicas = 2,
  batches of 1,024). Target: ≥ 0.1× the plain loop; items per call reported.
- Cold: connecting (an embedded instance started), then a stage's start to its first item back;
  warm: p50/p99 of one-item calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelined.config.spec import PipelineSpec, RayOptions, StageSpec
from pipelined.workers import make_process_stage
from pipelined.workers.ray_cluster import RayCluster, RayConfig
from pipelined.workers.ray_stage import RayStage

CODE = '''
def burn(item):
    total = 0
    for n in range(item):
        total += n * n % 7
    return total

def double(item):
    return item * 2
'''


def specs(code: Path, call: str, **stage: Any) -> tuple[PipelineSpec, StageSpec]:
    spec = StageSpec(name="work", call=f"benchcode:{call}", **stage)
    return PipelineSpec(name="bench", file=code / "bench.toml", version="0" * 12, stages=(spec,),
                        python_path=(code,)), spec


def feed(process: Callable[[str, list[Any]], Sequence[Any]], items: list[Any], feeders: int, chunk: int) -> float:
    """Seconds to push `items` through `process` from `feeders` threads taking `chunk` at a time."""
    lock = threading.Lock()
    position = [0]

    def worker() -> None:
        while True:
            with lock:
                start = position[0]
                position[0] += chunk
            if start >= len(items):
                return
            outcomes = process("bench", items[start:start + chunk])
            assert all(o.error is None for o in outcomes)

    threads = [threading.Thread(target=worker) for _ in range(feeders)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def calibrate(burn: Callable[[int], int]) -> int:
    n = 1000
    while True:
        began = time.perf_counter()
        burn(n)
        took = time.perf_counter() - began
        if took > 0.0005:
            return max(1, int(n * 0.001 / took))
        n *= 2


def main() -> int:
    from pipelined.workers.ray_cluster import INSTALL_HINT, ray_installed

    if not ray_installed():
        print(f"bench_ray: skipped: Ray is not installed; {INSTALL_HINT}")
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    code = tmp / "code"
    code.mkdir()
    (code / "benchcode.py").write_text(CODE)
    sys.path.insert(0, str(code))
    import benchcode  # type: ignore[import-not-found]

    work = calibrate(benchcode.burn)
    items = [work] * args.items
    began = time.perf_counter()
    for item in items:
        benchcode.burn(item)
    thread_s = time.perf_counter() - began

    pool = make_process_stage(*specs(code, "burn", processes=2), 2)
    pool.start()
    processes_s = feed(pool.process, items, 2, 10)
    pool.stop(10)

    cluster = RayCluster(RayConfig(state_dir=tmp / "state", object_store_memory=80 * 1024 * 1024))
    began = time.perf_counter()
    cluster.connect()
    connect_s = time.perf_counter() - began
    ray_options = RayOptions(max_in_flight=2)
    began = time.perf_counter()
    burn_stage = RayStage(*specs(code, "burn", executor="ray", replicas=2, ray_options=ray_options), cluster)
    burn_stage.start()
    burn_stage.process("bench", [1])
    cold_s = time.perf_counter() - began
    ray_s = feed(burn_stage.process, items, 4, 50)
    latencies = []
    for _ in range(200):
        began = time.perf_counter()
        burn_stage.process("bench", [1])
        latencies.append(time.perf_counter() - began)
    burn_stage.stop(10)

    numbers = list(range(200_000))
    began = time.perf_counter()
    for n in numbers:
        benchcode.double(n)
    loop_s = time.perf_counter() - began
    double_stage = RayStage(*specs(code, "double", executor="ray", replicas=2, ray_options=ray_options), cluster)
    double_stage.start()
    w1_s = feed(double_stage.process, numbers, 4, 1024)
    double_stage.stop(10)
    cluster.shutdown()

    latencies.sort()
    print(f"W3 ({args.items} items of ~1 ms): one thread {args.items / thread_s:,.0f}/s = 1.00x; "
          f"processes = 2 {args.items / processes_s:,.0f}/s = {thread_s / processes_s:.2f}x; "
          f"ray replicas = 2 {args.items / ray_s:,.0f}/s = {thread_s / ray_s:.2f}x (target >= 1.4x)")
    print(f"W1 (doubling {len(numbers):,} ints): plain loop {len(numbers) / loop_s:,.0f}/s = 1.00x; "
          f"ray replicas = 2, 1,024 items per call: {len(numbers) / w1_s:,.0f}/s = {loop_s / w1_s:.3f}x (target >= 0.1x)")
    print(f"cold: connect (embedded instance started) {connect_s:.1f} s; stage start to first item {cold_s:.1f} s; "
          f"warm one-item call p50 {statistics.median(latencies) * 1000:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
