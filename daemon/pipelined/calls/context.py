"""The `ctx` a user callable receives when it has a parameter named `ctx` (config.md, Callables):
its pipeline, stage, run, item id and attempt, a logger, `stopping`, `emit`, `emit_to` and
`on_delivered`. Built by `calls/invoke.py`'s `Invoker`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

EmitToSink = Callable[[str, Any], None]

ENGINE_LOGGER = logging.getLogger("pipelined.engine")


class StageContext:
    """The `ctx` a callable receives when it has a parameter named `ctx`."""

    __slots__ = (
        "pipeline", "stage", "run", "item_id", "attempt", "logger", "_stopping", "_emit", "_emit_to", "_delivered",
    )  # fmt: skip

    def __init__(
        self,
        pipeline: str,
        stage: str,
        run: str,
        stopping: Callable[[], bool],
        emit: Callable[[Any], None],
        emit_to: EmitToSink,
        item_id: str | None = None,
        attempt: int = 1,
        delivered: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.stage = stage
        self.run = run
        self.item_id = item_id  # "<run>.<n>": stable for the item and what derives from it
        self.attempt = attempt  # 1-based: retries and replays from a disk buffer count
        self._delivered = delivered
        self.logger = logging.LoggerAdapter(
            ENGINE_LOGGER, {"pipeline": pipeline, "stage": stage, "run": run}
        )
        self._stopping = stopping
        self._emit = emit
        self._emit_to = emit_to

    @property
    def stopping(self) -> bool:
        """True once the pipeline drains: a producer should return soon."""
        return self._stopping()

    def emit(self, item: Any) -> None:
        """Emit one more item downstream (like returning or yielding it)."""
        self._emit(item)

    def emit_to(self, stage: str, item: Any) -> None:
        """Send one item straight to `stage`'s input queue."""
        self._emit_to(stage, item)

    def on_delivered(self, callback: Callable[[], None]) -> None:
        """(Producers; used by built-in sources to save offsets.) Call `callback` once every item
        yielded so far has finished (memory buffer) or is in the disk buffer. Where the engine
        cannot tell (a producer in a worker process), it is called at once."""
        if self._delivered is None:
            callback()
        else:
            self._delivered(callback)
