"""The disk buffer's store alone (engine/disk_buffer.py), as ratios to an in-memory queue
measured in the same run.

    .venv/bin/python tools/bench_buffer.py [--items 200000] [--rounds 3] [--dir /var/tmp]

For each batch size (items per append) and `buffer_sync` mode: items/s through
append -> wait for the commit -> ack (each entry written, committed, then deleted), with one
thread and with 4 threads appending at once (group commit: one commit carries every thread's
batch). Baseline: `queue.Queue` put + get of the same batches. Also the cost of pickling alone,
and the per-item commit rate the research digest quotes (0.03-0.05x).
"""

from __future__ import annotations

import argparse
import pickle
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

from pipelined.engine.disk_buffer import DiskBuffer  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        where = Path(tmp)
        print(f"disk buffer store, {args.items:,} ints, best of {args.rounds} rounds; dir {where}")
        print(f"{'sync':<7}{'batch':>6}{'threads':>8}{'items/s':>12}{'commits':>9}{'queue.Queue':>13}{'ratio':>8}{'pickle items/s':>16}")
        for sync in ("normal", "full"):
            for batch in BATCHES:
                n = args.items if batch >= 10 or sync == "normal" else min(args.items, 5_000)
                n = n if batch > 1 else min(n, 20_000)
                items = list(range(n))
                for threads in (1, THREADS):
                    best: dict[str, Any] = {"rate": 0.0, "base": 0.0, "commits": 0}
                    for _ in range(args.rounds):
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
