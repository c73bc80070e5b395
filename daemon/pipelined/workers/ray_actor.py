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

from pipelined.workers import calling, protocol
from pipelined.workers.calling import Compact, Row, StageCallable
from pipelined.workers.logbridge import LogBuffer
from pipelined.workers.setup import WorkerSetup

_NEVER = float("inf")
BATCH_LOOPS = ("run_batch", "run_fast_batch")  # calling.py's loops (their rows so far: `rows`, `results`)


def _no_flush(rows: Any) -> None:
    """A Ray call answers once: rows are never sent in parts."""


def _rows_before(exc: BaseException, filtered_when_none: bool, count: int) -> list[Row]:
    """The rows of the `count` items a batch loop finished before `exc` went through it, read
    from the loop's frame (its local list of rows, or the compact form's lists)."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        name = frame.f_code.co_name
        if name in BATCH_LOOPS and frame.f_code.co_filename == calling.__file__:
            found = frame.f_locals
            if name == "run_batch":
                rows: list[Row] = list(found["rows"])
            else:
                rows = protocol.expand((calling.COMPACT, found["results"], found["seconds"], found["errors"],
                                        filtered_when_none))
            if len(rows) == count:
                return rows
            break
        tb = tb.tb_next
    lost = f"{type(exc).__name__} raised by a later item of the batch lost this item's result"  # not reached
    return [([], [], False, f"RuntimeError: {lost}", None, 0.0)] * count


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
        try:
            rows = self._run(stage_callable, run_id, items)
        finally:
            self.logs.run = None
        return protocol.encode_rows(protocol.DONE, rows, self.logs.take(), self.setup.stage)

    def _run(self, stage_callable: StageCallable, run_id: str | None, items: list[Any]) -> list[Row] | Compact:
        """The batch's rows. A BaseException that is not an Exception (KeyboardInterrupt,
        GeneratorExit; calling.py lets them through, and Ray would fail the whole call with
        TaskCancelledError) fails the item that raised it only, as in a thread stage: the rows
        of the items before it are taken from the batch loop's frame, the items after it run."""
        done: list[Row] = []
        start = 0
        while True:
            part = items[start:] if start else items
            try:
                if stage_callable.fast is not None:
                    rows: list[Row] | Compact = stage_callable.run_fast_batch(part, self.progress, _no_flush, _NEVER)
                else:
                    rows = stage_callable.run_batch(run_id, part, self.progress, _no_flush, _NEVER)
            except BaseException as exc:  # noqa: BLE001 - see the docstring
                index = max(0, self.progress[0])
                self.progress[0] = -1
                done.extend(_rows_before(exc, stage_callable.kind == "processor", index))
                done.append(([], [], False, f"{type(exc).__name__}: {exc}",
                             "".join(traceback.format_exception(exc)), 0.0))
                start += index + 1
                if start >= len(items):
                    return done
                continue
            if not done:
                return rows
            return done + protocol.expand(rows)

    def call_itemwise(self, run_id: str | None, pickles: list[tuple[bytes, str]], stopping: bool) -> bytes:
        """The same batch item by item: an item that does not unpickle fails alone."""
        stage_callable = self._ready()
        self.stopping = stopping
        rows: list[Row] = []
        self.logs.run = run_id
        try:
            for data, type_name in pickles:
                try:
                    item = pickle.loads(data)
                except Exception as exc:
                    rows.append(([], [], False, f"UnpicklingError: stage {self.setup.stage!r}: item of type "
                                 f"{type_name} cannot be unpickled in the ray actor: {type(exc).__name__}: {exc}",
                                 None, 0.0))
                    continue
                rows.extend(protocol.expand(self._run(stage_callable, run_id, [item])))
        finally:
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
