"""Worker processes for `processes = N` stages.

```python
stage = make_process_stage(pipeline_spec, stage_spec, processes)  # pool or fork_per_item
stage.start()                        # runs before_fork (pipeline hook, then stage hook) in the daemon,
                                     # then after_fork + setup() in every worker; StartError on failure
stage.process(run_id, items)         # -> list[ItemOutcome], one per item, in order; thread-safe
                                     # (trace=traceparent: current around the worker's calls;
                                     # item_ids=, attempt=: ctx.item_id / ctx.attempt of a ctx callable)
stage.stop(timeout)                  # close() in the workers; every process joined
stage.live_processes()
stage.produce(run_id, call_args, emit_to)  # producers: an iterator over one run's items, streamed
                                     # from a worker; ProducerFailed when it raises or its worker dies
```
A producer always runs in a pool worker (one run holds one worker), whatever its `process_mode`.
To run a pipeline's `before_fork` hook once for several process stages, call
`run_before_fork(pipeline_spec, stage_specs)` first, then `start(run_before_fork_hooks=False)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.workers.fork_per_item import ForkPerItemStage
from pipelined.workers.outcome import ItemOutcome, ProducerFailed
from pipelined.workers.pool import PoolStage
from pipelined.workers.setup import run_before_fork

__all__ = ["ItemOutcome", "ProcessStage", "ProducerFailed", "make_process_stage", "run_before_fork"]


class ProcessStage(Protocol):
    def start(self, run_before_fork_hooks: bool = True) -> None: ...

    def process(
        self,
        run_id: str | None,
        items: Any,
        trace: str | None = None,
        item_ids: Sequence[str | None] | None = None,
        attempt: int = 1,
    ) -> Sequence[ItemOutcome]: ...

    def stop(self, timeout: float = 30.0) -> None: ...

    def live_processes(self) -> int: ...

    def produce(
        self, run_id: str, call_args: Mapping[str, Any], emit_to: Callable[[str, Any], None] | None = None
    ) -> Iterator[Any]: ...


def make_process_stage(pipeline_spec: PipelineSpec, stage_spec: StageSpec, processes: int) -> ProcessStage:
    """The process side of a stage with `processes`; `processes` is the effective (allocated) count."""
    if stage_spec.process_mode == "fork_per_item" and stage_spec.kind != "producer":
        return ForkPerItemStage(pipeline_spec, stage_spec, processes)
    return PoolStage(pipeline_spec, stage_spec, processes)
