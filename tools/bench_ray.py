"""Ray executor benchmarks; ratios to baselines measured in the same run (docs/performance.md).

    .venv/bin/python tools/bench_ray.py [--items 2000] [--rounds 3]

- W3: 2,000 items of ~1 ms CPU. One local thread (baseline), `processes = 2` (the worker pool)
  and `executor = "ray"` with `replicas = 2`, each fed by as many threads as the engine runs for
  it, in chunks the engine's take-sizing would pick. Target: Ray ≥ 1.4× the thread.
- W1: 200,000 ints through x+1 -> x*2 -> a summing consumer. The plain loop calling the same
  functions (baseline) vs a real PipelineRuntime with x*2 on Ray (`replicas = 2`): target ≥ 0.1×;
  items per call reported. Beside it, the stage alone (RayStage.process fed by 4 threads in
  chunks of the engine's largest take, outputs taken in bulk as the engine does).
- Cold: connecting (an embedded instance started), then a stage's start to its first item back;
  warm: p50/p99 of one-item calls.

Rounds are interleaved (baseline, then each measurement, per round) so load changes hit all alike;
the best rate of each is compared with the best baseline, and the range of per-round ratios shown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent / "daemon"))
sys.path.insert(0, str(TOOLS))

from bench_workers import add_up, double, inc, numbers  # noqa: E402

from pipelined.config.spec import PipelineSpec, RayOptions, StageSpec  # noqa: E402
from pipelined.workers import make_process_stage  # noqa: E402

CODE = '''
def burn(item):
    total = 0
    for n in range(item):
        total += n * n % 7
    return total
'''


def specs(code: Path, call: str, **stage: Any) -> tuple[PipelineSpec, StageSpec]:
    spec = StageSpec(name="work", call=call, **stage)
    return PipelineSpec(name="bench", file=code / "bench.toml", version="0" * 12, stages=(spec,),
                        python_path=(code,)), spec


def feed(process: Callable[[str, list[Any]], Sequence[Any]], items: list[Any], feeders: int, chunk: int) -> float:
    """Seconds to push `items` through `process` from `feeders` threads taking `chunk` at a time;
    outputs are collected like the engine does (in bulk when the batch has `plain_outputs`)."""
    lock = threading.Lock()
    position = [0]
    outputs = [0]

    def worker() -> None:
        while True:
            with lock:
                start = position[0]
                position[0] += chunk
            if start >= len(items):
                return
            outcomes = process("bench", items[start:start + chunk])
            plain = getattr(outcomes, "plain_outputs", None)
            if plain is None:
                assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error][:3]
                plain = [out for o in outcomes for out in o.outputs]
            with lock:
                outputs[0] += len(plain)

    threads = [threading.Thread(target=worker) for _ in range(feeders)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    assert outputs[0] == len(items), outputs
    return seconds


def calibrate(burn: Callable[[int], int]) -> int:
    n = 1000
    while True:
        began = time.perf_counter()
        burn(n)
        took = time.perf_counter() - began
        if took > 0.0005:
            return max(1, int(n * 0.001 / took))
        n *= 2


def plain_loop(total: int) -> float:
    """W1 without the daemon: producer -> x+1 -> x*2 -> summing consumer; items/s."""
    began = time.perf_counter()
    for x in numbers(total):
        add_up(double(inc(x)))
    return total / (time.perf_counter() - began)


class EngineW1:
    """A started PipelineRuntime: src -> inc (a thread) -> double (Ray, replicas = 2) -> add_up."""

    def __init__(self) -> None:
        from pipelined.engine import PipelineBook, PipelineRuntime
        from pipelined.graph.routing import build_graph

        stages = (
            StageSpec(name="src", kind="producer", call="bench_workers:numbers", auto_start=False),
            StageSpec(name="inc", call="bench_workers:inc"),
            StageSpec(name="double", call="bench_workers:double", executor="ray", replicas=2,
                      ray_options=RayOptions(max_in_flight=2)),
            StageSpec(name="sink", kind="consumer", call="bench_workers:add_up"),
        )
        spec = PipelineSpec(name="benchray", file=TOOLS / "benchray.toml", version="0" * 12,
                            python_path=(TOOLS,), stages=stages)
        self.runtime = PipelineRuntime(spec, build_graph(spec).graph, None, PipelineBook(spec.name, None))
        self.runtime.start()
        self.stage = self.runtime.stages["double"].pool

    def rate(self, total: int) -> float:
        began = time.perf_counter()
        run_id = self.runtime.trigger("src", args={"count": total})
        assert self.runtime.book.runs.wait(run_id, 300.0), self.runtime.book.runs.get(run_id)
        seconds = time.perf_counter() - began
        run = self.runtime.book.runs.get(run_id)
        assert run["state"] == "completed" and run["items"]["finished"] == total, run
        return total / seconds

    def close(self) -> None:
        self.runtime.drain(10.0)


def line(name: str, rates: list[float], baselines: list[float], target: float | None = None, extra: str = "") -> None:
    ratio = max(rates) / max(baselines)
    rounds = [rate / base for rate, base in zip(rates, baselines, strict=True)]
    verdict = "" if target is None else ("  ok" if ratio >= target else f"  BELOW target {target}x")
    print(f"{name:<58} {max(rates):>11,.0f} items/s {ratio:6.3f}x  (rounds {min(rounds):.3f}-{max(rounds):.3f})"
          f"{extra}{verdict}", flush=True)


def main() -> int:
    from pipelined.workers import ray_cluster
    from pipelined.workers.ray_cluster import INSTALL_HINT, RayCluster, RayConfig, ray_installed
    from pipelined.workers.ray_stage import RayStage

    if not ray_installed():
        print(f"bench_ray: skipped: Ray is not installed; {INSTALL_HINT}")
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    code = tmp / "code"
    code.mkdir()
    (code / "benchcode.py").write_text(CODE)
    sys.path.insert(0, str(code))
    import benchcode  # type: ignore[import-not-found]

    print(f"bench_ray: embedded Ray, 80 MB object store; cores {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.2f}; best of {args.rounds} interleaved rounds", flush=True)
    config = RayConfig(state_dir=tmp / "state", object_store_memory=80 * 1024 * 1024)
    ray_cluster.configure(config)
    cluster = ray_cluster.cluster_for(config)
    began = time.perf_counter()
    cluster.connect()
    connect_s = time.perf_counter() - began
    assert isinstance(cluster, RayCluster)

    work = calibrate(benchcode.burn)
    items = [work] * args.items
    pool = make_process_stage(*specs(code, "benchcode:burn", processes=2), 2)
    pool.start()
    began = time.perf_counter()
    burn_stage = RayStage(*specs(code, "benchcode:burn", executor="ray", replicas=2,
                                 ray_options=RayOptions(max_in_flight=2)), cluster)
    burn_stage.start()
    burn_stage.process("bench", [1])
    cold_s = time.perf_counter() - began
    w3: dict[str, list[float]] = {"thread": [], "processes": [], "ray": []}
    for _ in range(args.rounds):
        w3["thread"].append(len(items) / _timed(lambda: [benchcode.burn(i) for i in items]))
        w3["processes"].append(len(items) / feed(pool.process, items, 2, 10))
        w3["ray"].append(len(items) / feed(burn_stage.process, items, 4, 50))
    pool.stop(10)
    latencies = []
    for _ in range(200):
        began = time.perf_counter()
        burn_stage.process("bench", [1])
        latencies.append(time.perf_counter() - began)
    burn_stage.stop(10)

    total = 200_000
    numbers_list = list(range(total))
    engine = EngineW1()
    double_stage = RayStage(*specs(TOOLS, "bench_workers:double", executor="ray", replicas=2,
                                   ray_options=RayOptions(max_in_flight=2)), cluster)
    double_stage.start()
    engine.rate(2000)  # warm
    from pipelined.engine.raystage import MAX_TAKE
    w1: dict[str, list[float]] = {"plain": [], "engine": [], "stage": []}
    calls = items_sent = 0
    for _ in range(args.rounds):
        w1["plain"].append(plain_loop(total))
        before = (engine.stage.calls, engine.stage.items_sent)
        w1["engine"].append(engine.rate(total))
        calls += engine.stage.calls - before[0]
        items_sent += engine.stage.items_sent - before[1]
        w1["stage"].append(total / feed(double_stage.process, numbers_list, 4, MAX_TAKE))
    engine.close()
    double_stage.stop(10)
    cluster.shutdown()

    line(f"W3 ({args.items} items of ~1 ms): one thread (baseline)", w3["thread"], w3["thread"])
    line("W3 processes = 2", w3["processes"], w3["thread"])
    line("W3 ray replicas = 2", w3["ray"], w3["thread"], 1.4)
    line(f"W1 ({total:,} ints): plain loop x+1 -> x*2 -> sum (baseline)", w1["plain"], w1["plain"])
    line("W1 engine: x*2 on ray, replicas = 2", w1["engine"], w1["plain"], 0.1,
         f"  {items_sent / max(1, calls):,.0f} items per call")
    line(f"W1 RayStage alone, 4 feeders, {MAX_TAKE:,} items per call", w1["stage"], w1["plain"])
    latencies.sort()
    print(f"cold: connect (embedded instance started) {connect_s:.1f} s; stage start to first item {cold_s:.1f} s; "
          f"warm one-item call p50 {statistics.median(latencies) * 1000:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.2f} ms")
    return 0


def _timed(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
