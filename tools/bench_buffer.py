"""The disk buffer (`buffer = "disk"`), as ratios to baselines measured in the same run.

    .venv/bin/python tools/bench_buffer.py [--only store,w1,slow,backlog] [--items 200000] [--rounds 3]

store    the store alone (engine/disk_buffer.py): for each batch size (items per append) and
         `buffer_sync` mode, items/s through append -> wait for the commit -> ack, with one
         thread and with 4 threads appending at once (group commit), against `queue.Queue`
         put + get of the same batches; and the cost of pickling alone.
w1       W1 (200,000 ints, x+1 -> x*2 -> summing consumer) through a real PipelineRuntime with
         the memory buffer, `buffer = "disk"` (normal) and (full), rounds interleaved; ratios to
         the memory buffer (target >= 0.5x for normal) and to the plain loop.
slow     a W3-like pipeline whose stage spends 50 us of CPU per item: disk vs memory (>= 0.9x).
backlog  1,000,000 items stored while the consumer is held: the file's size with the backlog,
         and after it was worked off (the writer vacuums and truncates).
"""

from __future__ import annotations

import argparse
import pickle
import queue
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
from pipelined.engine.disk_buffer import DiskBuffer  # noqa: E402
from pipelined.graph.routing import build_graph  # noqa: E402

BATCHES = (1, 10, 100, 1024)
THREADS = 4


def baseline(items: list[int], batch: int) -> float:
    q: queue.Queue[list[int]] = queue.Queue()
    began = time.perf_counter()
    for i in range(0, len(items), batch):
        q.put(items[i : i + batch])
        q.get()
    return len(items) / (time.perf_counter() - began)


def through_buffer(where: Path, sync: str, items: list[int], batch: int, threads: int) -> tuple[float, int]:
    buf = DiskBuffer(where / f"bench-{sync}-{batch}-{threads}.sqlite3", "bench", sync)
    try:
        parts = [items[k::threads] for k in range(threads)]
        commits_before = buf._writer.commits

        def one(part: list[int], run: str) -> None:
            for i in range(0, len(part), batch):
                group = part[i : i + batch]
                rows, commit = buf.append(run, "src", "out", i + 1, group)
                commit.wait()
                for entry_id, count in rows:
                    buf.ack(entry_id, count)

        workers = [threading.Thread(target=one, args=(p, f"r-{k:06d}")) for k, p in enumerate(parts)]
        began = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        buf.flush()
        took = time.perf_counter() - began
        return len(items) / took, buf._writer.commits - commits_before
    finally:
        buf.close(remove=True)


def pickling(items: list[int], batch: int) -> float:
    began = time.perf_counter()
    for i in range(0, len(items), batch):
        pickle.dumps(items[i : i + batch], protocol=5)
    return len(items) / (time.perf_counter() - began)


# -- through the engine -------------------------------------------------------------------------
fns = types.ModuleType("bench_buffer_fns")
sys.modules["bench_buffer_fns"] = fns
TOTAL = [0]
GATE = threading.Event()


def source(n: int = 200_000):  # type: ignore[no-untyped-def]
    yield from range(n)


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


def total(x: int) -> None:
    TOTAL[0] += x


def spin_50us(x: int) -> int:
    until = time.perf_counter() + 50e-6
    while time.perf_counter() < until:
        pass
    return x


def held(x: int) -> None:
    GATE.wait()


for _fn in (source, inc, double, total, spin_50us, held):
    setattr(fns, _fn.__name__, _fn)


def pipeline(stages: tuple[StageSpec, ...], buffer: str, sync: str = "normal") -> PipelineSpec:
    return PipelineSpec(name="bench", file=Path("bench.toml"), version="0" * 12, stages=stages,
                        buffer=buffer, buffer_sync=sync)  # fmt: skip


def timed_run(spec: PipelineSpec, where: Path, n: int) -> float:
    with tempfile.TemporaryDirectory(dir=where) as state:
        book = PipelineBook("bench", Path(state))
        rt = PipelineRuntime(spec, build_graph(spec).graph, None, book)
        rt.start()
        began = time.perf_counter()
        run_id = rt.trigger("src", args={"n": n})
        assert rt.book.runs.wait(run_id, 600)
        elapsed = time.perf_counter() - began
        state_of_run = rt.book.runs.get(run_id)["state"]
        rt.drain(10)
        book.close()
    assert state_of_run == "completed"
    return elapsed


def w1_stages() -> tuple[StageSpec, ...]:
    return (
        StageSpec(name="src", kind="producer", call="bench_buffer_fns:source", auto_start=False),
        StageSpec(name="inc", call="bench_buffer_fns:inc"),
        StageSpec(name="double", call="bench_buffer_fns:double"),
        StageSpec(name="sum", kind="consumer", call="bench_buffer_fns:total"),
    )


def compare(where: Path, n: int, rounds: int, stages: tuple[StageSpec, ...], label: str, syncs: tuple[str, ...]) -> None:
    """Memory and disk runs interleaved round by round; best times and per-round ratio ranges."""
    times: dict[str, list[float]] = {"memory": [], **{f"disk/{s}": [] for s in syncs}}
    plain: list[float] = []
    for _ in range(rounds):
        if label == "W1":
            began = time.perf_counter()
            for x in source(n):
                total(double(inc(x)))
            plain.append(time.perf_counter() - began)
        times["memory"].append(timed_run(pipeline(stages, "memory"), where, n))
        for sync in syncs:
            times[f"disk/{sync}"].append(timed_run(pipeline(stages, "disk", sync), where, n))
    memory = times["memory"]
    line = f"{label:<5} memory {n / min(memory):>11,.0f} items/s"
    if plain:
        line += f" ({min(plain) / min(memory):.2f}x the plain loop)"
    print(line)
    for key in times:
        if key == "memory":
            continue
        ratios = [m / d for m, d in zip(memory, times[key], strict=True)]
        extra = f", {min(plain) / min(times[key]):.2f}x the plain loop" if plain else ""
        print(f"      {key:<11} {n / min(times[key]):>11,.0f} items/s: {min(memory) / min(times[key]):.2f}x memory "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}{extra})")


def backlog(where: Path, n: int) -> None:
    stages = (
        StageSpec(name="src", kind="producer", call="bench_buffer_fns:source", auto_start=False),
        StageSpec(name="sink", kind="consumer", call="bench_buffer_fns:held", queue_size=n + 1000),
    )
    spec = pipeline(stages, "disk")
    GATE.clear()
    with tempfile.TemporaryDirectory(dir=where) as state:
        book = PipelineBook("bench", Path(state))
        rt = PipelineRuntime(spec, build_graph(spec).graph, None, book)
        rt.start()
        began = time.perf_counter()
        run_id = rt.trigger("src", args={"n": n})
        while rt.book.runs.get(run_id)["items"]["produced"] < n:
            time.sleep(0.05)
        assert book.buffer is not None and book.buffer.flush(60)
        stored = time.perf_counter() - began
        during = book.buffer.stats()
        GATE.set()
        assert rt.book.runs.wait(run_id, 600)
        book.buffer.flush(60)
        deadline = time.monotonic() + 30  # the writer's maintenance: vacuum, checkpoint(TRUNCATE)
        while book.buffer.stats()["bytes"] > 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.25)
        after = book.buffer.stats()
        rt.drain(10)
        book.close()
    print(f"backlog {n:,} ints stored in {stored:.1f} s: file {during['bytes'] / 1e6:.1f} MB with "
          f"{during['items']:,} items stored; {after['bytes'] / 1e6:.2f} MB after they were worked off "
          f"({after['items']} stored)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="store,w1,slow,backlog")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        where = Path(tmp)
        if "w1" in only:
            compare(where, args.items, max(args.rounds, 5), w1_stages(), "W1", ("normal", "full"))
        if "slow" in only:
            slow = (w1_stages()[0], StageSpec(name="spin", call="bench_buffer_fns:spin_50us"),
                    StageSpec(name="sum", kind="consumer", call="bench_buffer_fns:total"))  # fmt: skip
            compare(where, 20_000, args.rounds, slow, "slow", ("normal",))
        if "backlog" in only:
            backlog(where, 1_000_000)
        if "store" in only:
            store(where, args.items, args.rounds)


def store(where: Path, items_n: int, rounds: int) -> None:
    print(f"store alone, {items_n:,} ints, best of {rounds} rounds")
    print(f"{'sync':<7}{'batch':>6}{'threads':>8}{'items/s':>12}{'commits':>9}{'queue.Queue':>13}{'ratio':>8}{'pickle items/s':>16}")
    for sync in ("normal", "full"):
        for batch in BATCHES:
            n = items_n if batch >= 10 or sync == "normal" else min(items_n, 5_000)
            n = n if batch > 1 else min(n, 20_000)
            items = list(range(n))
            for threads in (1, THREADS):
                best: dict[str, Any] = {"rate": 0.0, "base": 0.0, "commits": 0}
                for _ in range(rounds):
                    base = baseline(items, batch)
                    rate, commits = through_buffer(where, sync, items, batch, threads)
                    if rate > best["rate"]:
                        best.update(rate=rate, commits=commits)
                    best["base"] = max(best["base"], base)
                print(
                    f"{sync:<7}{batch:>6}{threads:>8}{best['rate']:>12,.0f}{best['commits']:>9}"
                    f"{best['base']:>13,.0f}{best['rate'] / best['base']:>8.3f}{pickling(items, batch):>16,.0f}"
                )


if __name__ == "__main__":
    main()
