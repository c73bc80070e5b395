"""`RayStage`: the actors of one `executor = "ray"` stage, behind the process-stage interface.

```python
stage = RayStage(pipeline_spec, stage_spec, cluster_for(config))  # stage_spec.replicas, .ray_options
stage.start()                       # connect, start `replicas` actors (setup() in each); StartError
stage.process(run_id, items)        # -> one ItemOutcome per item, in order; thread-safe, blocking
stage.stop(timeout)                 # close() in every actor, then kill it
stage.live_processes(), stage.stats()   # actors alive; {"replicas": {...}, "in_flight_batches": n}
```
Each `process()` call is one batch on one actor: the least busy ready replica with fewer than
`max_in_flight` batches in flight (else the caller waits: back-pressure reaches the stage's
queue). Items travel pickled (as to worker processes); an item that does not pickle fails alone,
and a batch the actor cannot unpickle is sent again item by item.

When an actor dies (killed, OOM, its node lost) every item of its batch fails that attempt with
`RayActorDied: ray actor died: ...` (the engine retries, then dead-letters) and a replacement
starts in the background; callers wait up to NO_ACTOR_WAIT for a ready replica, then fail their
batch with the last start error. Nothing is retried here: retries and dead letters stay the
engine's, as for every stage.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.errors import StartError
from pipelined.workers import protocol, ray_code
from pipelined.workers.bounded import bounded
from pipelined.workers.logbridge import replay
from pipelined.workers.outcome import ItemOutcome, failed
from pipelined.workers.ray_cluster import CONNECT_TIMEOUT, RayCluster
from pipelined.workers.ray_config import ActorStartFailed, RayCallFailed, RayUnavailable
from pipelined.workers.setup import worker_setup

log = logging.getLogger("pipelined.workers")

START_TIMEOUT = 120.0  # a new worker process, the runtime_env unpacked, the import, setup()
NO_ACTOR_WAIT = 30.0
REPLACE_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
KILLED_CALLER_GRACE = 5.0


class _Replica:
    def __init__(self, index: int) -> None:
        self.index = index
        self.actor_id: int | None = None
        self.state = "new"  # new, starting, ready, dead
        self.in_flight = 0
        self.error = ""
        self.info: dict[str, Any] = {}


class RayStage:
    def __init__(self, pipeline_spec: PipelineSpec, stage_spec: StageSpec, cluster: RayCluster) -> None:
        self.pipeline_spec = pipeline_spec
        self.stage_spec = stage_spec
        self.options = stage_spec.ray_options
        self.cluster = cluster
        self.name = stage_spec.name
        self.where = f"{pipeline_spec.file}: {pipeline_spec.name}/{stage_spec.name}"
        self.setup = worker_setup(pipeline_spec, stage_spec)
        self.max_in_flight = max(1, self.options.max_in_flight)
        self._replicas = [_Replica(i) for i in range(max(1, stage_spec.replicas))]
        self._cond = threading.Condition()
        self._stopping = False
        self._started = False
        self._actor_options: dict[str, Any] = {}
        self._extra = {"pipeline": pipeline_spec.name, "stage": stage_spec.name}
        self.calls = 0  # process() calls sent to an actor, and their items (items per call)
        self.items_sent = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, run_before_fork_hooks: bool = False) -> None:
        """Connect and start every replica; StartError naming the stage when any fails."""
        with bounded(CONNECT_TIMEOUT + START_TIMEOUT + 30):  # longer than a reload's watchdog allowance
            self._start()

    def _start(self) -> None:
        try:
            self.cluster.connect()
        except RayUnavailable as exc:
            raise StartError(f"{self.where}: executor = \"ray\": {exc}") from None
        o = self.options
        self._actor_options = ray_code.actor_options(
            ray_code.runtime_env(self.pipeline_spec.python_path), o.num_cpus, o.num_gpus, o.memory,
            dict(o.resources), self.max_in_flight)
        starts = []
        for replica in self._replicas:
            replica.actor_id, ready = self.cluster.new_actor(self.setup, self._actor_options)
            replica.state = "starting"
            starts.append((replica, ready))
        deadline = time.monotonic() + START_TIMEOUT
        try:
            for replica, ready in starts:
                replica.info = ready.result(max(0.0, deadline - time.monotonic()))
                replica.state = "ready"
        except ActorStartFailed as failure:
            self._abort_start()
            raise StartError(f"{self.where}: {failure.where} failed in a ray actor: {failure.error}") from None
        except FutureTimeout:
            self._abort_start()
            raise StartError(f"{self.where}: ray actors did not start within {START_TIMEOUT:.0f} s; does "
                             f"{self.cluster.config.describe()} have the resources asked for ({self._asked()})?") from None
        self._started = True
        log.info("stage %s: %d ray actor(s) ready on %s", self.name, len(self._replicas),
                 self.cluster.config.describe(), extra=self._extra)

    def _asked(self) -> str:
        asked = {k: self._actor_options[k] for k in ("num_cpus", "num_gpus", "memory", "resources")
                 if k in self._actor_options}
        return ", ".join(f"{k} = {v}" for k, v in asked.items()) or "1 CPU each"

    def _abort_start(self) -> None:
        for replica in self._replicas:
            if replica.actor_id is not None:
                self.cluster.kill_actor(replica.actor_id)
            replica.actor_id, replica.state = None, "dead"

    def stop(self, timeout: float = 30.0) -> None:
        """Let batches in flight finish until the deadline, then close() every actor and kill it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
            while self._in_flight() and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            busy = [r for r in self._replicas if r.in_flight and r.actor_id is not None]
        for replica in busy:  # still calling user code at the deadline: its batch fails
            assert replica.actor_id is not None
            self.cluster.kill_actor(replica.actor_id)
        with self._cond:
            grace = time.monotonic() + min(KILLED_CALLER_GRACE, max(1.0, timeout))
            while self._in_flight() and time.monotonic() < grace:
                self._cond.wait(max(0.0, grace - time.monotonic()))
            closing = [(r, r.actor_id) for r in self._replicas if r.actor_id is not None and r not in busy]
            for replica in self._replicas:
                replica.actor_id, replica.state = None, "dead"
        closes = [(actor_id, self.cluster.close_actor(actor_id)) for _, actor_id in closing if actor_id]
        end = max(deadline, time.monotonic() + 1.0)
        for actor_id, closed in closes:
            try:
                error = closed.result(max(0.0, end - time.monotonic()))
            except FutureTimeout:
                error = "close() did not return in time; the actor was killed"
            except Exception as exc:
                error = f"close() did not run: {exc}"
            if error:
                log.warning("stage %s: ray actor: %s", self.name, error, extra=self._extra)
            self.cluster.kill_actor(actor_id)
        self._started = False

    def live_processes(self) -> int:
        with self._cond:
            return sum(1 for r in self._replicas if r.state == "ready")

    def stats(self) -> dict[str, Any]:
        with self._cond:
            alive = sum(1 for r in self._replicas if r.state == "ready")
            return {"executor": "ray", "replicas": {"alive": alive, "wanted": len(self._replicas)},
                    "in_flight_batches": self._in_flight()}

    def _in_flight(self) -> int:
        return sum(r.in_flight for r in self._replicas)

    # -- work ----------------------------------------------------------------------------------
    def process(self, run_id: str | None, items: Sequence[Any], trace: str | None = None) -> Sequence[ItemOutcome]:
        """One outcome per item, in order; blocks while every replica has max_in_flight batches.
        `trace` (the batch's traceparent, pipelined.tracing) is not carried into the actors: the
        batch's span is the daemon's only."""
        if not items:
            return []
        replica, error = self._acquire()
        if replica is None:
            return [failed(error)] * len(items)
        try:
            return self._call(replica, run_id, items)
        finally:
            with self._cond:
                replica.in_flight -= 1
                self.calls += 1
                self.items_sent += len(items)
                self._cond.notify_all()

    def _acquire(self) -> tuple[_Replica | None, str]:
        deadline = time.monotonic() + NO_ACTOR_WAIT
        with self._cond:
            while True:
                if self._stopping or not self._started:
                    return None, f"WorkerStopped: stage {self.name!r} is stopping"
                ready = [r for r in self._replicas if r.state == "ready"]
                free = [r for r in ready if r.in_flight < self.max_in_flight]
                if free:
                    replica = min(free, key=lambda r: r.in_flight)
                    replica.in_flight += 1
                    return replica, ""
                gone = all(r.state == "dead" for r in self._replicas)  # every replacement failed
                if not ready and (gone or time.monotonic() >= deadline):
                    errors = "; ".join(sorted({r.error for r in self._replicas if r.error})) or "starting"
                    return None, f"RayUnavailable: stage {self.name!r}: no ray actor is running: {errors}"
                self._cond.wait(max(0.05, deadline - time.monotonic()) if not ready else None)

    def _call(self, replica: _Replica, run_id: str | None, items: Sequence[Any]) -> Sequence[ItemOutcome]:
        actor_id = replica.actor_id
        assert actor_id is not None
        outcomes: list[ItemOutcome | None] = [None] * len(items)
        sent = list(range(len(items)))
        try:
            data = protocol.dumps(list(items))
        except Exception:
            sent = self._drop_unpicklable(items, outcomes)
            if not sent:
                return outcomes  # type: ignore[return-value]
            data = protocol.dumps([items[i] for i in sent])
        try:
            reply = self.cluster.call(actor_id, run_id, data, self._stopping)
            kind, payload, logs = pickle.loads(reply)
            replay(logs)
            if kind == protocol.LOAD_FAILED:
                pickles = [(protocol.dumps(items[i]), protocol.type_name(items[i])) for i in sent]
                reply = self.cluster.call_itemwise(actor_id, run_id, pickles, self._stopping)
                kind, payload, logs = pickle.loads(reply)
                replay(logs)
        except RayCallFailed as failure:
            if failure.dead:
                self._lost(replica, actor_id, failure.error, len(sent))
            return [outcome or failed(failure.error) for outcome in outcomes]
        made = protocol.outcomes(payload)
        if len(sent) == len(items):
            return made
        for index, outcome in zip(sent, made, strict=True):
            outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def _drop_unpicklable(self, items: Sequence[Any], outcomes: list[ItemOutcome | None]) -> list[int]:
        keep: list[int] = []
        for index, item in enumerate(items):
            try:
                pickle.dumps(item, protocol=protocol.PROTOCOL)
                keep.append(index)
            except Exception as exc:
                outcomes[index] = failed(protocol.pickle_error(self.name, "item", item, exc))
        return keep

    # -- replacing dead actors -----------------------------------------------------------------
    def _lost(self, replica: _Replica, actor_id: int, error: str, batch: int) -> None:
        with self._cond:
            if replica.actor_id != actor_id or self._stopping:
                return  # already being replaced, or stopping anyway
            replica.state, replica.actor_id, replica.error = "starting", None, error
            self._cond.notify_all()
        log.warning("stage %s: %s; its batch of %d item(s) fails this attempt; starting a replacement",
                    self.name, error, batch, extra=self._extra)
        self.cluster.kill_actor(actor_id)
        threading.Thread(target=self._replace, args=(replica,), daemon=True,
                         name=f"{self.pipeline_spec.name}:{self.name}:ray-replace{replica.index + 1}").start()

    def _replace(self, replica: _Replica) -> None:
        attempt = 0
        while not self._stopping:
            try:
                self.cluster.connect()
                actor_id, ready = self.cluster.new_actor(self.setup, self._actor_options)
                with self._cond:
                    replica.actor_id = actor_id
                try:
                    info = ready.result(START_TIMEOUT)
                except FutureTimeout:
                    self.cluster.kill_actor(actor_id)
                    raise ActorStartFailed("actor start", f"not ready within {START_TIMEOUT:.0f} s", None) from None
            except (RayUnavailable, ActorStartFailed) as exc:
                error = str(exc) if isinstance(exc, RayUnavailable) else f"{exc.where} failed: {exc.error}"
                with self._cond:
                    replica.state, replica.actor_id, replica.error = "dead", None, error
                    self._cond.notify_all()
                delay = REPLACE_BACKOFF[min(attempt, len(REPLACE_BACKOFF) - 1)]
                attempt += 1
                log.error("stage %s: a replacement ray actor did not start: %s (next try in %.0f s)",
                          self.name, error, delay, extra=self._extra)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, delay)
                    if not self._stopping:
                        replica.state = "starting"
                continue
            with self._cond:
                if self._stopping:
                    self.cluster.kill_actor(actor_id)
                    return
                replica.state, replica.info, replica.error = "ready", info, ""
                self._cond.notify_all()
            log.info("stage %s: replacement ray actor ready", self.name, extra=self._extra)
            return
