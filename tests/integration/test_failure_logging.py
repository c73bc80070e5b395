"""Failed attempts do not flood the log (a real daemon, its stderr counted line by line).

10,000 items fail: the log gets the first failure of the kind with its traceback, then summary
lines per stage (count, last error) — a handful of lines, not a traceback per item. Every dead
letter keeps its own traceback.
"""

from __future__ import annotations

import re

import pytest

from harness import DaemonProcess

N = 10_000

STAGES = '''
def numbers(n=10):
    yield from range(n)


def picky(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    raise KeyError(x)
'''

PIPELINE = '''
max_retries = 0

[[stage]]
name = "gen"
kind = "producer"
call = "flood:numbers"
auto_start = false

[[stage]]
name = "picky"
call = "flood:picky"
threads = 2
'''


@pytest.mark.timeout(120)
def test_ten_thousand_failures_write_a_few_log_lines(daemon: DaemonProcess) -> None:
    daemon.write_module("flood", STAGES)
    daemon.write_pipeline("flood", PIPELINE)
    daemon.start()
    r = daemon.client.post("/pipelines/flood/stages/gen/trigger?wait=true&timeout=90", json={"args": {"n": N}})
    assert r.status_code == 200 and r.json()["items"]["dead_lettered"] == N, r.text
    letters = daemon.client.get("/pipelines/flood/dead-letters?limit=3").json()
    assert all(x["traceback"].startswith("Traceback (most recent call last):") for x in letters)
    assert all("in picky" in x["traceback"] for x in letters)
    # the drain writes the pending summary (no 10 s wait)
    assert daemon.client.post("/pipelines/flood/drain?wait=true").status_code == 200
    assert daemon.stop() == 0

    lines = daemon.logs().splitlines()
    about_picky = [line for line in lines if "picky" in line or line.startswith(("Traceback", "  ", "ValueError", "KeyError"))]
    assert len(lines) < 80, f"{len(lines)} log lines for {N} failures:\n" + "\n".join(lines[:40])
    firsts = [line for line in lines if "item dead-lettered after attempt 1" in line]
    assert len(firsts) == 2, firsts  # one per kind: ValueError and KeyError
    assert sum(line.startswith("Traceback") for line in lines) == 2
    counted = [int(m.group(1)) for line in about_picky if (m := re.search(r"(\d+) more failed attempts?", line))]
    assert sum(counted) + len(firsts) == N, counted
    assert any(re.search(r"\((\d+) dead-lettered\); last: run r-\d+: (ValueError|KeyError)", line) for line in lines)
