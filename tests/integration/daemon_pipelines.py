"""TOML text of the pipelines the daemon integration tests run (callables from flow_stages.py)."""

from __future__ import annotations

from pathlib import Path

from harness import DaemonProcess

FLOW_STAGES = Path(__file__).with_name("flow_stages.py")


def install_flow_stages(daemon: DaemonProcess) -> Path:
    """Copy flow_stages.py into the daemon's modules dir; returns the dir items are recorded in."""
    daemon.write_module("flow_stages", FLOW_STAGES.read_text())
    out = daemon.base_dir / "out"
    out.mkdir(exist_ok=True)
    return out


def flow(out_dir: Path, *, description: str = "flow", delay: float = 0.001, work_seconds: float = 0.0,
         count: int = 1_000_000_000, auto_start: bool = True, drain_timeout: str = "10s",
         work_call: str = "flow_stages:slow", threads: int = 2) -> str:  # fmt: skip
    """producer `source` → processor `work` → consumer `sink`, recording produced/consumed items."""
    work_args = f"{{ seconds = {work_seconds} }}" if work_call == "flow_stages:slow" else "{}"
    return f"""
description = "{description}"
drain_timeout = "{drain_timeout}"
max_threads = 6

[[stage]]
name = "source"
kind = "producer"
call = "flow_stages:numbers"
auto_start = {str(auto_start).lower()}
args = {{ out_dir = "{out_dir}", delay = {delay}, count = {count} }}

[[stage]]
name = "work"
call = "{work_call}"
threads = {threads}
args = {work_args}

[[stage]]
name = "sink"
kind = "consumer"
call = "flow_stages:record"
args = {{ out_dir = "{out_dir}" }}
"""


def echo(description: str = "echo", seconds: float = 0.0) -> str:
    """A pipeline fed by triggers with items: processor `work` → consumer `sink` (a no-op)."""
    return f"""
description = "{description}"

[[stage]]
name = "work"
call = "flow_stages:slow"
args = {{ seconds = {seconds} }}

[[stage]]
name = "sink"
kind = "consumer"
call = "flow_stages:slow"
"""


BROKEN = """
description = "broken"
[[stage]]
name = "only"
kind = "producer"
call = "flow_stages:numbers"
thread = 3
"""
