"""Pipelines (TOML) and callables the browser tests run; built-in stages where they suffice."""

from __future__ import annotations

from harness import DaemonProcess

UI_STAGES = '''
def reject(item):
    raise ValueError(f"refused {item!r}")
'''

# ticks → work (the slowest: the bottleneck) → checks (nested, parallel: left, right) → sink
FLOW = """
description = "a steady flow with a nested block"
max_threads = 8
drain_timeout = "10s"

[[stage]]
name = "ticks"
kind = "producer"
call = "pipelined.stages:count"
args = { start = 1, interval = "20ms" }

[[stage]]
name = "work"
call = "pipelined.stages:sleep"
args = { seconds = "15ms" }

[[stage]]
name = "checks"
kind = "pipeline"
mode = "parallel"

  [[stage.stage]]
  name = "left"
  call = "pipelined.stages.examples:square"

  [[stage.stage]]
  name = "right"
  call = "pipelined.stages.examples:parity"

[[stage]]
name = "sink"
kind = "consumer"
call = "pipelined.stages:write_jsonl"
args = { path = "out/flow.jsonl" }
"""
FLOW_NODES = {"ticks", "work", "left", "right", "sink"}
FLOW_BOXES = {"checks"}

# only runs when triggered
ORDERS = """
description = "triggered runs only"

[[stage]]
name = "fetch"
kind = "producer"
call = "pipelined.stages:count"
auto_start = false
args = { start = 0, stop = 2 }

[[stage]]
name = "store"
kind = "consumer"
call = "pipelined.stages:write_jsonl"
args = { path = "out/orders.jsonl" }
"""

# every item is dead-lettered at once
FRAGILE = """
description = "refuses every item"
max_retries = 0

[[stage]]
name = "judge"
call = "ui_stages:reject"

[[stage]]
name = "drop"
kind = "consumer"
call = "pipelined.stages:log"
"""


def install(daemon: DaemonProcess, *names: str) -> DaemonProcess:
    """Write the named pipelines (and the test callables) into the daemon's dirs."""
    daemon.write_module("ui_stages", UI_STAGES)
    texts = {"flow": FLOW, "orders": ORDERS, "fragile": FRAGILE}
    for name in names:
        daemon.write_pipeline(name, texts[name])
    return daemon
