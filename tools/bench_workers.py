"""Benchmark worker processes (`processes = 2`) against baselines measured in the same run.

W3: 2,000 items of ~1 ms pure-Python CPU work — processes=2 vs one thread (target >= 1.5x) and
vs a bare ProcessPoolExecutor(2) with chunks of 16 (target >= 0.9x).
Both at the level of the pool and through a real PipelineRuntime (producer -> burn in
processes = 2 -> consumer).
W1: 200,000 ints through x+1 -> x*2 (in processes = 2) -> a summing consumer vs the plain loop
calling the same three functions (target >= 0.2x), through the engine; at the pool level too (2
dispatcher threads, chunks of 256), per-item and bulk (`plain_outputs`) collection.
Prints one line per measurement; results are recorded in docs/performance.md.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent / "daemon"))

BURN_STEPS = 1  # calibrated in main() to ~1 ms
COUNTED = [0]


def burn(item: int) -> int:
    total = 0
    for n in range(BURN_STEPS_FOR_WORKERS):
        total += n * n % 7
    return total + item


BURN_STEPS_FOR_WORKERS = int(os.environ.get("BENCH_BURN_STEPS", "20000"))


def double(item: int) -> int:
    return item * 2


def inc(item: int) -> int:
    return item + 1


TOTAL = [0]


def add_up(item: int) -> None:
    TOTAL[0] += item


def numbers(count: int = 0) -> Iterator[int]:
    yield from range(count)


def count(item: Any) -> None:
    COUNTED[0] += 1


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def calibrate() -> int:
    steps = 20000
    global BURN_STEPS_FOR_WORKERS
    BURN_STEPS_FOR_WORKERS = steps
    seconds = min(timed(lambda: [burn(0) for _ in range(200)]) for _ in range(3)) / 200
    return max(100, int(steps * 0.001 / seconds))


def pool_rate(call: str, items: list[int], chunk: int = 256, threads: int = 2, bulk: bool = False) -> float:
    """items/s through a started PoolStage, fed by `threads` dispatcher threads like the engine's.

    Each dispatcher collects the outputs like the engine does: per item (reading every
    ItemOutcome), or with `bulk` from `plain_outputs` when the batch has one."""
    from pipelined.config.spec import PipelineSpec, StageSpec
    from pipelined.workers import make_process_stage

    stage = StageSpec(name="work", call=f"bench_workers:{call}", processes=2)
    pipeline = PipelineSpec(name="bench", file=TOOLS / "bench.toml", version="0" * 12, stages=(stage,),
                            python_path=(TOOLS,))
    pool = make_process_stage(pipeline, stage, 2)
    pool.start()
    try:
        pool.process("warm", items[:2])
        lock = threading.Lock()
        position = [0]
        produced = [0]

        def dispatch() -> None:
            while True:
                with lock:
                    start = position[0]
                    n = min(chunk, max(1, (len(items) - start) // threads))
                    batch = items[start:start + n]
                    position[0] = start + len(batch)
                if not batch:
                    return
                outcomes = pool.process("bench", batch)
                outputs: list[Any] = []
                plain = getattr(outcomes, "plain_outputs", None) if bulk else None
                if plain is not None:
                    outputs.extend(plain)
                else:
                    for outcome in outcomes:
                        if outcome.error is None:
                            outputs.extend(outcome.outputs)
                with lock:
                    produced[0] += len(outputs)

        workers = [threading.Thread(target=dispatch) for _ in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - started
        assert produced[0] == len(items), produced
        return len(items) / seconds
    finally:
        pool.stop(10.0)


def executor_rate(fn: Callable[[int], int], items: list[int], chunksize: int) -> float:
    with ProcessPoolExecutor(2) as executor:
        list(executor.map(fn, [0, 0], chunksize=1))  # workers up
        seconds = timed(lambda: list(executor.map(fn, items, chunksize=chunksize)))
    return len(items) / seconds


def engine_rate(total: int, middle: tuple[str, ...], *, processes: bool, sink: str = "add_up") -> float:
    """items/s through a real PipelineRuntime: src -> `middle` stages -> `sink`; the last middle
    stage runs in `processes = 2` when `processes`, every other stage in one thread."""
    from pipelined.config.spec import PipelineSpec, StageSpec
    from pipelined.engine import PipelineBook, PipelineRuntime
    from pipelined.graph.routing import build_graph

    stages = [StageSpec(name="src", kind="producer", call="bench_workers:numbers", auto_start=False)]
    for i, call in enumerate(middle):
        last = i == len(middle) - 1
        stages.append(StageSpec(name=f"s{i}_{call}", call=f"bench_workers:{call}",
                                processes=2 if processes and last else None))
    stages.append(StageSpec(name="sink", kind="consumer", call=f"bench_workers:{sink}"))
    spec = PipelineSpec(name="benchw", file=TOOLS / "benchw.toml", version="0" * 12, python_path=(TOOLS,),
                        max_processes=2, stages=tuple(stages))
    runtime = PipelineRuntime(spec, build_graph(spec).graph, None, PipelineBook(spec.name, None))
    runtime.start()
    try:
        module = sys.modules["bench_workers"]
        module.COUNTED[0] = module.TOTAL[0] = 0
        started = time.perf_counter()
        run_id = runtime.trigger("src", args={"count": total})
        assert runtime.book.runs.wait(run_id, 120.0), runtime.book.runs.get(run_id)
        seconds = time.perf_counter() - started
        run = runtime.book.runs.get(run_id)
        assert run["state"] == "completed" and run["items"]["finished"] == total, run
        return total / seconds
    finally:
        runtime.drain(10.0)


def line(name: str, rates: list[float], baselines: list[float], target: float | None = None) -> None:
    """Best rate over best baseline, and the range of the ratios measured round by round."""
    ratio = max(rates) / max(baselines)
    rounds = [rate / base for rate, base in zip(rates, baselines, strict=True)]
    verdict = "" if target is None else ("  ok" if ratio >= target else f"  BELOW target {target}x")
    print(f"{name:<66} {max(rates):>11,.0f} items/s {ratio:6.3f}x  (rounds {min(rounds):.3f}-{max(rounds):.3f}){verdict}",
          flush=True)


def best_of(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Every rate of each measurement over `rounds`, interleaved so load changes hit all alike."""
    rates: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            rates[name].append(measure())
    return rates


def main() -> None:
    steps = calibrate()
    os.environ["BENCH_BURN_STEPS"] = str(steps)
    global BURN_STEPS_FOR_WORKERS
    BURN_STEPS_FOR_WORKERS = steps
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    print(f"W3: 2,000 items of ~1 ms CPU (burn steps {steps}); W1: 200,000 ints; cores: {os.cpu_count()}; "
          f"best of {rounds} interleaved rounds (and the range of the per-round ratios); "
          f"load average {os.getloadavg()[0]:.2f}")

    w3 = list(range(2000))
    r = best_of(rounds, {
        "thread": lambda: len(w3) / timed(lambda: [burn(x) for x in w3]),
        "executor": lambda: executor_rate(burn, w3, 16),
        "pool": lambda: pool_rate("burn", w3),
        "engine": lambda: engine_rate(len(w3), ("burn",), processes=True, sink="count"),
    })
    line("W3 one thread (baseline)", r["thread"], r["thread"])
    line("W3 ProcessPoolExecutor(2), chunksize 16", r["executor"], r["thread"])
    line("W3 pool processes=2 vs one thread", r["pool"], r["thread"], 1.5)
    line("W3 pool processes=2 vs ProcessPoolExecutor(2)", r["pool"], r["executor"], 0.9)
    line("W3 engine: producer -> burn processes=2 -> consumer vs one thread", r["engine"], r["thread"], 1.5)
    line("W3 engine processes=2 vs ProcessPoolExecutor(2)", r["engine"], r["executor"], 0.9)

    w1 = list(range(200_000))

    def plain_loop() -> None:  # W1 without the daemon: producer -> x+1 -> x*2 -> summing consumer
        for x in numbers(len(w1)):
            add_up(double(inc(x)))

    r = best_of(rounds, {
        "plain": lambda: len(w1) / timed(plain_loop),
        "executor": lambda: executor_rate(double, w1, 1000),
        "pool": lambda: pool_rate("double", w1),
        "bulk": lambda: pool_rate("double", w1, bulk=True),
        "threads": lambda: engine_rate(len(w1), ("inc", "double"), processes=False),
        "engine": lambda: engine_rate(len(w1), ("inc", "double"), processes=True),
    })
    line("W1 plain loop: producer -> x+1 -> x*2 -> sum (baseline)", r["plain"], r["plain"])
    line("W1 ProcessPoolExecutor(2).map(x*2), chunksize 1000", r["executor"], r["plain"])
    line("W1 pool processes=2 (2 dispatchers, chunks of 256)", r["pool"], r["plain"])
    line("W1 pool processes=2, outputs taken in bulk (plain_outputs)", r["bulk"], r["plain"])
    line("W1 engine: every stage in one thread", r["threads"], r["plain"])
    line("W1 engine: x*2 in processes=2", r["engine"], r["plain"], 0.2)
    line("W1 engine: x*2 in processes=2 vs ProcessPoolExecutor(2).map", r["engine"], r["executor"])


if __name__ == "__main__":
    main()
