"""Engine benchmarks, printed as ratios to baselines measured in the same run.

    .venv/bin/python tools/bench_engine.py [--items 200000] [--only w1,lat,w2,async] [--clock cpu]

W1   200,000 ints through x+1 -> x*2 -> summing consumer, one thread per stage, vs a plain loop
     calling the same three functions (target >= 0.5x).
W1p  the same with x*2 in `processes = 2` (worker processes; target >= 0.2x).
W1pr W1 whose run has priority 5 (every queue in its priority lanes) and W1rl W1 with a
     rate_limit and a concurrency on x+1 and x*2 that never bind (the gate's cost): not targets,
     the price of those features next to W1.
--clock cpu  W1 rows timed in CPU seconds of this process (all its threads) instead of wall
     time: on a machine shared with other jobs, their load then barely moves the ratio.
LAT  W1 at 1,000 items/s: time from the producer's yield to the consumer (p50 <= 100 us,
     p99 <= 1 ms).
--otel  trace every run into an SDK provider whose exporter drops the spans (the cost of
     tracing on: a span per run and per chunk); without it tracing is off, as by default.
W2   a stage sleeping 1 ms per item with 8 and 32 threads vs a bare pool of as many threads
     doing the same sleeps (target >= 0.95x); an async stage with concurrency 256 vs a bare
     asyncio.gather bounded to 256 (target >= 0.9x).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

from pipelined.config.spec import PipelineSpec, StageSpec  # noqa: E402
from pipelined.engine import PipelineBook, PipelineRuntime  # noqa: E402
from pipelined.graph.routing import build_graph  # noqa: E402

# -- the user code, as a module the engine imports ------------------------------------------
fns = types.ModuleType("bench_engine_fns")
sys.modules["bench_engine_fns"] = fns
TOTAL = [0]
STAMPS: list[float] = []
CLOCK = [time.perf_counter]  # W1's clock (--clock cpu: time.process_time)


def source(n: int = 200_000):  # type: ignore[no-untyped-def]
    yield from range(n)


def paced(n: int = 2000, rate: float = 1000.0):  # type: ignore[no-untyped-def]
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for _ in range(n):
        next_at += interval
        while (now := time.perf_counter()) < next_at:
            time.sleep(max(0.0, next_at - now - 0.0002)) if next_at - now > 0.0003 else None
        yield time.perf_counter()


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


def total(x: int) -> None:
    TOTAL[0] += x


def stamp(x: float) -> None:
    STAMPS.append(time.perf_counter() - x)


def ident(x: Any) -> Any:
    return x


def sleep_1ms(x: Any) -> None:
    time.sleep(0.001)


async def async_sleep_1ms(x: Any) -> None:
    await asyncio.sleep(0.001)


for _fn in (source, paced, inc, double, total, stamp, ident, sleep_1ms, async_sleep_1ms):
    setattr(fns, _fn.__name__, _fn)


# -- helpers --------------------------------------------------------------------------------
def run_pipeline(
    stages: tuple[StageSpec, ...], args: dict[str, Any] | None = None, clock: Any = time.perf_counter, **trigger: Any
) -> float:
    spec = PipelineSpec(name="bench", file=Path("bench.toml"), version="0" * 12, stages=stages)
    graph = build_graph(spec).graph
    with tempfile.TemporaryDirectory() as state:
        rt = PipelineRuntime(spec, graph, None, PipelineBook("bench", Path(state)))
        rt.start()
        began = clock()
        run_id = rt.trigger(stages[0].name, args=args, **trigger)
        assert rt.book.runs.wait(run_id, 600)
        elapsed = clock() - began
        run = rt.book.runs.get(run_id)
        rt.drain(10)
    assert run["state"] == "completed", run
    return elapsed


def producer(call: str, **args: Any) -> StageSpec:
    return StageSpec(name="src", kind="producer", call=f"bench_engine_fns:{call}", args=args, auto_start=False)


def best_of(times: int, fn: Any) -> float:
    return min(fn() for _ in range(times))


def interleaved(times: int, baseline: Any, engine: Any) -> tuple[float, float, str]:
    """Best of `times` for each, alternating, so load from other processes hits both alike; and
    the range of the per-round ratios (baseline time / engine time)."""
    base, eng = [], []
    for _ in range(times):
        base.append(baseline())
        eng.append(engine())
    ratios = [b / e for b, e in zip(base, eng, strict=True)]
    return min(base), min(eng), f"rounds {min(ratios):.2f}-{max(ratios):.2f}"


# -- W1 ---------------------------------------------------------------------------------------
def w1(n: int, processes: int | None = None, variant: str = "") -> None:
    """`variant`: "" (W1 / W1p), "priority" (the run at priority 5), "gate" (a rate_limit and a
    concurrency that never bind on x+1 and x*2)."""
    clock = CLOCK[0] if processes is None else time.perf_counter  # worker processes' CPU is not ours
    limits: dict[str, Any] = {}
    if variant == "gate":
        from pipelined.config.spec import RateLimit

        limits = {"rate_limit": RateLimit(10**12, 1.0, f"{10**12}/s"), "concurrency": 64}

    def plain() -> float:
        TOTAL[0] = 0
        began = clock()
        for x in source(n):
            total(double(inc(x)))
        return clock() - began

    def engine() -> float:
        TOTAL[0] = 0
        elapsed = run_pipeline(
            (
                producer("source", n=n),
                StageSpec(name="inc", call="bench_engine_fns:inc", **limits),
                StageSpec(name="double", call="bench_engine_fns:double", processes=processes, **limits),
                StageSpec(name="sum", kind="consumer", call="bench_engine_fns:total"),
            ),
            clock=clock,
            **({"priority": 5} if variant == "priority" else {}),
        )
        assert TOTAL[0] == sum((x + 1) * 2 for x in range(n))
        return elapsed

    base, eng, spread = interleaved(5, plain, engine)
    name, target = ("W1p", "(target >= 0.2x)") if processes else ("W1 ", "(target >= 0.5x)")
    if variant:
        name, target = {"priority": ("W1pr", "(priority 5)"), "gate": ("W1rl", "(rate_limit + concurrency)")}[variant]
    unit = " CPU" if clock is time.process_time else ""
    print(f"{name:<4} plain loop {n / base:>12,.0f} items/s{unit} | engine {n / eng:>12,.0f} items/s{unit} | "
          f"ratio {base / eng:.2f}x, best of 5 ({spread}) {target}")


def latency() -> None:
    STAMPS.clear()
    run_pipeline(
        (
            producer("paced", n=2000, rate=1000.0),
            StageSpec(name="inc", call="bench_engine_fns:ident"),
            StageSpec(name="double", call="bench_engine_fns:ident"),
            StageSpec(name="sum", kind="consumer", call="bench_engine_fns:stamp"),
        )
    )
    values = sorted(STAMPS)
    p50 = values[len(values) // 2] * 1e6
    p99 = values[int(len(values) * 0.99)] * 1e6
    print(f"LAT  1,000 items/s, yield -> consumer: p50 {p50:.0f} us (target <= 100) | "
          f"p99 {p99:.0f} us (target <= 1000) | mean {statistics.mean(values) * 1e6:.0f} us")


# -- W2 ---------------------------------------------------------------------------------------
def w2(threads: int, n: int) -> None:
    def bare() -> float:
        work: queue.Queue[int | None] = queue.Queue()
        for i in range(n):
            work.put(i)
        for _ in range(threads):
            work.put(None)

        def worker() -> None:
            while work.get() is not None:
                time.sleep(0.001)

        began = time.perf_counter()
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - began

    def engine() -> float:
        return run_pipeline(
            (
                producer("source", n=n),
                StageSpec(name="sleep", kind="consumer", call="bench_engine_fns:sleep_1ms", threads=threads),
            )
        )

    base = best_of(2, bare)
    eng = best_of(2, engine)
    theoretical = threads * 1000
    print(f"W2   {threads:>3} threads: bare {n / base:>8,.0f}/s ({n / base / theoretical:.2f} of theory) | "
          f"engine {n / eng:>8,.0f}/s | ratio {base / eng:.2f}x (target >= 0.95x)")


def w2_async(concurrency: int, n: int) -> None:
    def bare() -> float:
        async def main() -> None:
            limit = asyncio.Semaphore(concurrency)

            async def one(x: int) -> None:
                async with limit:
                    await async_sleep_1ms(x)

            await asyncio.gather(*(one(i) for i in range(n)))

        began = time.perf_counter()
        asyncio.run(main())
        return time.perf_counter() - began

    def engine() -> float:
        return run_pipeline(
            (
                producer("source", n=n),
                StageSpec(
                    name="sleep", kind="consumer", call="bench_engine_fns:async_sleep_1ms", threads=concurrency
                ),
            )
        )

    base = best_of(2, bare)
    eng = best_of(2, engine)
    print(f"W2a  async concurrency {concurrency}: bare gather {n / base:>8,.0f}/s | engine {n / eng:>8,.0f}/s | "
          f"ratio {base / eng:.2f}x (target >= 0.9x)")


def api_responsiveness(n: int) -> None:
    """How long a thread standing in for the API waits for the GIL while W1 runs flat out."""
    for interval in (0.005, 0.001):
        sys.setswitchinterval(interval)
        delays: list[float] = []
        stop = threading.Event()

        def api_thread(delays: list[float] = delays, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                began = time.perf_counter()
                time.sleep(0.001)
                delays.append(time.perf_counter() - began - 0.001)

        watcher = threading.Thread(target=api_thread)
        watcher.start()
        TOTAL[0] = 0
        elapsed = run_pipeline(
            (
                producer("source", n=n),
                StageSpec(name="inc", call="bench_engine_fns:inc"),
                StageSpec(name="double", call="bench_engine_fns:double"),
                StageSpec(name="sum", kind="consumer", call="bench_engine_fns:total"),
            )
        )
        stop.set()
        watcher.join()
        delays.sort()
        p50 = delays[len(delays) // 2] * 1e3
        p99 = delays[int(len(delays) * 0.99)] * 1e3
        print(f"API  switch interval {interval * 1e3:.0f} ms: W1 {n / elapsed:>10,.0f} items/s | "
              f"an API thread's extra wait for the GIL p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    sys.setswitchinterval(0.005)


def trace_into_nothing() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from pipelined import tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    tracing.use_provider(provider)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--only", default="w1,w1p,lat,w2,async,api")
    parser.add_argument("--otel", action="store_true", help="tracing on (spans made, then dropped)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="W1's clock (cpu: this process's CPU time)")
    opts = parser.parse_args()
    only = set(opts.only.split(","))
    if opts.clock == "cpu":
        CLOCK[0] = time.process_time
    if opts.otel:
        trace_into_nothing()
    print(f"python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1000:.1f} ms"
          + (", tracing on" if opts.otel else ""))
    if "w1" in only:
        w1(opts.items)
    if "w1p" in only:
        w1(opts.items, processes=2)
    if "w1pr" in only:
        w1(opts.items, variant="priority")
    if "w1rl" in only:
        w1(opts.items, variant="gate")
    if "lat" in only:
        latency()
    if "w2" in only:
        w2(8, 2000)
        w2(32, 8000)
    if "async" in only:
        w2_async(256, 50_000)
    if "api" in only:
        api_responsiveness(opts.items * 5)


if __name__ == "__main__":
    main()
