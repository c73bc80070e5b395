"""Runs one pipeline version in threads: queues, routers, runs, retries, dead letters, drain, stats.

The supervisor uses `PipelineBook` (what outlives a version: run ids, counters, dead letters)
and `PipelineRuntime` (one start→drain lifecycle); see docs/architecture.md.
"""

from pipelined.engine.book import PipelineBook
from pipelined.engine.runtime import PipelineRuntime

__all__ = ["PipelineBook", "PipelineRuntime"]
