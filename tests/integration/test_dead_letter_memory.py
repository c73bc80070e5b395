"""Dead letters of big items through a real daemon: memory stays bounded (measured in /proc).

Four 20 MB items dead-lettered must not keep ~80 MB of RSS (memory keeps a bounded preview,
the file keeps the whole item), and `GET …/dead-letters?limit=10` must not peak at the size of
every letter (it costs O(limit) of bounded previews).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from harness import DaemonProcess

MB = 1024 * 1024
ITEM_BYTES = 20 * MB

STAGES = '''
def big(n=4, size=1000):
    for i in range(n):
        yield str(i) + "x" * (size - 1)      # a new string each time


def refuse(item):
    raise ValueError(f"refused an item of {len(item)} chars")
'''

PIPELINE = '''
max_retries = 0

[[stage]]
name = "gen"
kind = "producer"
call = "dlbig:big"
auto_start = false

[[stage]]
name = "refuse"
call = "dlbig:refuse"
'''


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM (peak RSS) to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.mark.timeout(180)
def test_big_dead_letters_do_not_stay_in_memory_and_listing_them_is_cheap(daemon: DaemonProcess) -> None:
    daemon.write_module("dlbig", STAGES)
    daemon.write_pipeline("bigdl", PIPELINE)
    daemon.start()
    trigger = "/pipelines/bigdl/stages/gen/trigger?wait=true&timeout=60"
    # warm up every code path with small items, then take the baseline
    for _ in range(2):
        r = daemon.client.post(trigger, json={"args": {"n": 4, "size": 1000}})
        assert r.status_code == 200 and r.json()["items"]["dead_lettered"] == 4, r.text
        daemon.client.get("/pipelines/bigdl/dead-letters?limit=10").raise_for_status()
    before = _status_kb(daemon.pid, "VmRSS") * 1024

    r = daemon.client.post(trigger, json={"args": {"n": 4, "size": ITEM_BYTES}})
    assert r.status_code == 200 and r.json()["items"]["dead_lettered"] == 4, r.text
    after = _status_kb(daemon.pid, "VmRSS") * 1024
    kept = after - before
    assert kept < 4 * ITEM_BYTES / 2, f"RSS grew by {kept / MB:.0f} MB after 4 dead letters of 20 MB"

    can_reset = _reset_peak(daemon.pid)
    r = daemon.client.get("/pipelines/bigdl/dead-letters?limit=10")
    assert r.status_code == 200
    letters = r.json()
    big = [x for x in letters if x["truncated"]]
    assert len(big) == 4 and all(len(x["item"]) < MB for x in big)
    assert sorted(x["item"][:2] for x in big) == ['"0', '"1', '"2', '"3']
    assert all("ValueError: refused an item of 20971520 chars" in x["traceback"] for x in big)
    if can_reset:
        peak = _status_kb(daemon.pid, "VmHWM") * 1024
        assert peak - after < ITEM_BYTES, f"listing 10 letters peaked {(peak - after) / MB:.0f} MB above RSS"

    # the files have every item whole (80 MB: rotated once at 64 MiB)
    lines = [line for path in (daemon.state_dir / "dead-letters").iterdir() for line in path.read_bytes().splitlines()]
    whole = [orjson.loads(line) for line in lines if len(line) > ITEM_BYTES]
    assert sorted(len(x["item"]) for x in whole) == [ITEM_BYTES] * 4
    assert daemon.stop() == 0
