"""The Ray actor of an `executor = "ray"` stage: one instance of the stage's callable.

Runs inside a Ray worker process (on this machine or on a cluster node). It holds the same
`StageCallable` the pool worker processes use (workers/calling.py), so outputs, `ctx.emit`,
`ctx.emit_to`, filtering and errors come back as the same rows, pickled the same way
(`protocol.encode_rows`), together with the log records the call produced. The daemon turns them
into `ItemOutcome`s exactly as for a process stage.

    actor = ray.remote(StageActor).options(**options).remote(setup)
    actor.start.remote()             # -> (READY, info, logs) or (START_FAILED, (where, error, tb), logs)
    actor.call.remote(run_id, data, stopping)   # data: pickled list of items -> reply bytes
    actor.call_itemwise.remote(run_id, pickles, stopping)   # when `data` did not unpickle
    actor.close.remote()             # -> (CLOSED, error text or None, logs)

The code under the version's `python_path` is not read from the daemon's disk: it arrives with
the actor's `runtime_env` (workers/ray_code.py), already first on `sys.path`. This module does
not import `ray`: the driver process decorates the class.
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from dataclasses import replace
from typing import Any

from pipelined.workers import protocol
from pipelined.workers.calling import Compact, Row, StageCallable
from pipelined.workers.logbridge import LogBuffer
from pipelined.workers.setup import WorkerSetup
from pipelined.workers.worker_main import _run_itemwise


def _no_flush(rows: Any) -> None:
    """A Ray call answers once: rows are never sent in parts."""


class StageActor:
    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = replace(setup, python_path=())  # the shipped code is on sys.path already
        self.logs = LogBuffer(setup.pipeline, setup.stage, setup.log_level)
        self.callable: StageCallable | None = None
        self.stopping = False
        self.progress = [-1, 0]

    def start(self) -> tuple[str, Any, list[dict[str, Any]]]:
        """Import the callable, instantiate a class, call its setup(); never raises."""
        self.logs.install()
        where = f"import of {self.setup.call!r}"
        try:
            stage_callable = StageCallable(self.setup, lambda: self.stopping)
            where = "setup()"
            stage_callable.setup()
        except BaseException as exc:  # SystemExit / KeyboardInterrupt in setup() too: reported, not fatal
            text = "".join(traceback.format_exception(exc))
            return protocol.START_FAILED, (where, f"{type(exc).__name__}: {exc}", text), self.logs.take()
        self.callable = stage_callable
        info = {"pid": os.getpid(), "host": socket.gethostname()}
        return protocol.READY, info, self.logs.take()

    def call(self, run_id: str | None, data: bytes, stopping: bool) -> bytes:
        """Rows for a pickled batch (`protocol.encode_rows`); LOAD_FAILED when it does not unpickle."""
        stage_callable = self._ready()
        self.stopping = stopping
        try:
            items = pickle.loads(data)
        except Exception as exc:
            return protocol.dumps((protocol.LOAD_FAILED, f"{type(exc).__name__}: {exc}", self.logs.take()))
        self.logs.run = run_id
        rows: list[Row] | Compact
        if stage_callable.fast is not None:
            rows = stage_callable.run_fast_batch(items, self.progress, _no_flush, float("inf"))
        else:
            rows = stage_callable.run_batch(run_id, items, self.progress, _no_flush, float("inf"))
        self.logs.run = None
        return protocol.encode_rows(protocol.DONE, rows, self.logs.take(), self.setup.stage)

    def call_itemwise(self, run_id: str | None, pickles: list[tuple[bytes, str]], stopping: bool) -> bytes:
        """The same batch item by item: an item that does not unpickle fails alone."""
        stage_callable = self._ready()
        self.stopping = stopping
        self.logs.run = run_id
        rows = _run_itemwise(stage_callable, run_id, pickles, self.setup.stage, self.progress, _no_flush)
        self.logs.run = None
        return protocol.encode_rows(protocol.DONE, rows, self.logs.take(), self.setup.stage)

    def close(self) -> tuple[str, str | None, list[dict[str, Any]]]:
        """The instance's close(); its error as text (None when it went well)."""
        stage_callable, self.callable = self.callable, None
        error: str | None = None
        if stage_callable is not None:
            try:
                stage_callable.close()
            except Exception as exc:
                error = f"close() failed: {type(exc).__name__}: {exc}"
        return protocol.CLOSED, error, self.logs.take()

    def _ready(self) -> StageCallable:
        if self.callable is None:
            raise RuntimeError(f"stage {self.setup.stage!r}: the actor was not started (or was closed)")
        return self.callable
