"""`executor = "ray"` stages against a real embedded Ray (one instance for the module, 80 MB of
object store): outcomes item for item, classes, errors, ctx, shipped code, actor death, setup()."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.spec import PipelineSpec, RayOptions, StageSpec
from pipelined.errors import StartError
from pipelined.workers import ItemOutcome, ray_driver
from pipelined.workers.ray_cluster import INSTANCE_MARK, RayCluster, RayConfig, RayUnavailable
from pipelined.workers.ray_stage import RayStage

USERLAND = Path(__file__).parent / "ray_userland"
pytestmark = pytest.mark.timeout(300)


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def marked_processes(ray_dir: Path) -> list[int]:
    """Processes carrying the embedded instance's mark (what shutdown must leave none of)."""
    mark = f"\0{INSTANCE_MARK}={ray_dir}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in b"\0" + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    state = tmp_path_factory.mktemp("ray-state")
    ray_cluster = RayCluster(RayConfig(state_dir=state, object_store_memory=80 * 1024 * 1024, num_cpus=2))
    ray_cluster.connect()
    yield ray_cluster
    ray_cluster.shutdown()
    assert marked_processes(ray_cluster.ray_dir) == []


def make_stage(cluster: RayCluster, call: str, *, replicas: int = 1, args: dict[str, Any] | None = None,
               python_path: tuple[Path, ...] = (USERLAND,)) -> RayStage:
    stage = StageSpec(name="work", call=call, args=args or {}, executor="ray", replicas=replicas,
                      ray_options=RayOptions(max_in_flight=2))
    audit = StageSpec(name="audit", kind="consumer", call="raystages:double")
    pipeline = PipelineSpec(name="raytest", file=USERLAND / "raytest.toml", version="0" * 12,
                            stages=(stage, audit), python_path=python_path)
    return RayStage(pipeline, stage, cluster)


@pytest.fixture(scope="module")
def universal(cluster: RayCluster) -> Iterator[RayStage]:
    """One stage shared by the tests that need no stage of their own (an actor start costs seconds)."""
    stage = make_stage(cluster, "raystages:universal", replicas=2)
    stage.start()
    yield stage
    stage.stop(10.0)


@pytest.fixture
def stages(cluster: RayCluster) -> Iterator[Callable[..., RayStage]]:
    started: list[RayStage] = []

    def start(call: str, **options: Any) -> RayStage:
        ray_stage = make_stage(cluster, call, **options)
        started.append(ray_stage)
        ray_stage.start()
        return ray_stage

    yield start
    for ray_stage in started:
        ray_stage.stop(10.0)


def outputs(outcomes: Any) -> list[list[Any]]:
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]
    return [list(o.outputs) for o in outcomes]


def test_items_come_back_in_order_from_both_replicas(universal: RayStage) -> None:
    assert universal.stats() == {"executor": "ray", "replicas": {"alive": 2, "wanted": 2}, "in_flight_batches": 0}
    assert universal.live_processes() == 2
    assert outputs(universal.process("run-1", [("double", n) for n in range(1000)])) == [[n * 2] for n in range(1000)]
    assert universal.process("run-1", []) == []
    results: list[Any] = []

    def feed(n: int) -> None:
        results.extend(universal.process(f"run-{n}", [("where", n)] * 50))

    threads = [threading.Thread(target=feed, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 400 and all(o.error is None for o in results)
    assert len({o.outputs[0][1] for o in results}) == 2  # both actors served batches
    assert os.getpid() not in {o.outputs[0][1] for o in results}
    assert universal.stats()["in_flight_batches"] == 0


def test_errors_fail_their_own_item_only(universal: RayStage) -> None:
    items = [("double", 1), ("raise", "x"), ("exit", 3), ("lambda", 0), ("filter", 0), ("double", 2)]
    results = universal.process("run-1", items)
    assert [list(o.outputs) for o in results] == [[2], [], [], [], [], [4]]
    bad, exited, unpicklable, filtered = results[1:5]
    assert bad.error == "ValueError: bad item 'x'"
    assert bad.traceback is not None and "raystages.py" in bad.traceback
    assert exited.error == "SystemExit: 3"
    assert unpicklable.error is not None and unpicklable.error.startswith("PicklingError: stage 'work': result")
    assert (filtered.filtered, filtered.error) == (True, None)
    sent = universal.process("run-2", [("double", 1), lambda: 1, ("double", 3)])  # cannot be sent: fails alone
    assert [list(o.outputs) for o in sent] == [[2], [], [6]]
    assert sent[1].error is not None and "item of type function cannot be pickled" in sent[1].error


def test_base_exceptions_and_unpicklable_errors_fail_their_own_item_only(
    universal: RayStage, stages: Callable[..., RayStage]
) -> None:
    """As in a thread stage: KeyboardInterrupt, StopIteration, an exception that does not pickle
    fail the attempt of the item that raised them; the batch's other items keep their results
    (Ray alone failed the whole call with TaskCancelledError on a KeyboardInterrupt)."""
    items = [("double", 1), ("interrupt", "ki"), ("stopiteration", 5), ("unpicklable_error", 7), ("double", 2),
             ("interrupt", "last")]
    plain = stages("raystages:plain")
    for stage in (universal, plain):  # a ctx function (row per item), a plain one (compact rows)
        results = stage.process("run-1", items)
        assert [list(o.outputs) for o in results] == [[2], [], [], [], [4], []]
        interrupted, stopped, unpicklable = results[1:4]
        assert interrupted.error == "KeyboardInterrupt: ki"
        assert interrupted.traceback is not None and "raystages.py" in interrupted.traceback
        assert stopped.error == "StopIteration: 5"
        assert unpicklable.error == "Unpicklable: cannot travel 7"
        assert results[5].error == "KeyboardInterrupt: last"
        wanted = len(stage._replicas)
        assert stage.stats()["replicas"] == {"alive": wanted, "wanted": wanted}  # the actors lived on
        assert outputs(stage.process("run-1", [("double", 3)])) == [[6]]


def test_ray_errors_read_as_what_was_raised_in_the_actor() -> None:
    """An error of the actor's own code reached the dead letter as Ray's colored header and
    caret lines: "RayError: RayTaskError(TaskCancelledError): \\x1b[36mray::StageActor.call()..."."""
    import ray.exceptions

    try:
        raise KeyError("boom")
    except KeyError as exc:
        error = ray.exceptions.RayTaskError("StageActor.call", traceback.format_exc(), exc,
                                            proctitle="ray::StageActor.call()", pid=1, ip="127.0.0.1")
    assert ray_driver._text(error.as_instanceof_cause()) == "RayTaskError(KeyError): KeyError: 'boom'"
    colored = RuntimeError("\x1b[36mray::StageActor.call()\x1b[39m (pid=1)\nline two")
    assert ray_driver._text(colored) == "RuntimeError: ray::StageActor.call() (pid=1) line two"


def test_a_ray_client_address_without_ray_client_says_what_to_install(tmp_path: Path) -> None:
    """`ray://` needs Ray Client (grpcio), which `pipelined[ray]` (plain `ray`) does not bring."""
    listening = socket.create_server(("127.0.0.1", 0))  # something there: the TCP probe passes
    address = f"ray://127.0.0.1:{listening.getsockname()[1]}"
    client = RayCluster(RayConfig(address=address, state_dir=tmp_path))
    try:
        with pytest.raises(RayUnavailable) as caught:
            client.connect(timeout=120)
    finally:
        client.shutdown()
        listening.close()
    message = str(caught.value)
    assert "Ray Client requires pip package `ray[client]`" in message, message
    assert "install it into the daemon's environment: pip install 'ray[client]'" in message, message
    assert "or give the cluster's GCS address (host:6379)" in message, message


def test_huge_items_and_results_travel(universal: RayStage) -> None:
    """Bigger than the 80 MB object store: a batch goes by value through the driver."""
    size = 100 * 1024 * 1024
    results = universal.process("run-1", [("big", size), ("double", 1)])
    assert results[0].error is None and len(results[0].outputs[0]) == size
    assert outputs(results[1:]) == [[2]]
    echoed = universal.process("run-1", [("double", "y" * size)])
    assert echoed[0].error is None and len(echoed[0].outputs[0]) == 2 * size


def test_an_item_the_actor_cannot_unpickle_fails_alone(universal: RayStage) -> None:
    """The batch does not unpickle in the actor: it is sent again item by item."""
    sys.path.insert(0, str(USERLAND))
    try:
        import raystages
    finally:
        sys.path.remove(str(USERLAND))
    items = [("double", 1), raystages.LoadsNowhere(), ("interrupt", "ki"), ("double", 2)]
    results = universal.process("run-1", items)
    assert [list(o.outputs) for o in results] == [[2], [], [], [4]]
    assert results[1].error == ("UnpicklingError: stage 'work': item of type raystages.LoadsNowhere cannot be "
                                "unpickled in the ray actor: ValueError: this item does not unpickle here")
    assert results[2].error == "KeyboardInterrupt: ki"


def test_ctx_emit_emit_to_and_logs(universal: RayStage, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        first, = universal.process("run-7", [("fan", 1)])
    assert list(first.outputs) == [("emitted", 1), ("returned", 1)]
    assert list(first.routed) == [("audit", ("audited", 1))]
    seen = [r for r in caplog.records if r.getMessage() == "fan saw 1"]
    assert seen and getattr(seen[0], "run", None) == "run-7" and getattr(seen[0], "stage", None) == "work"


def test_class_stage_set_up_once_per_actor_and_closed(stages: Callable[..., RayStage], tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    stage = stages("raystages:Scorer", args={"record": str(record), "factor": 3})
    results = list(stage.process("run-1", list(range(100)))) + list(stage.process("run-1", [7]))
    assert [o.outputs[0][0] for o in results] == [n * 3 for n in range(100)] + [21]
    pid = results[0].outputs[0][1]
    assert record.read_text().split() == ["setup", str(pid)]
    stage.stop(10.0)
    assert record.read_text().split() == ["setup", str(pid), "close", str(pid)]


def test_code_is_shipped_and_a_new_version_runs_new_code(
    stages: Callable[..., RayStage], universal: RayStage, tmp_path: Path
) -> None:
    where = universal.process("r", [("where", 0)])[0].outputs[0][0]
    assert not where.startswith(str(USERLAND))  # imported from the shipped copy, not the test's dir
    code = tmp_path / "code"
    code.mkdir()
    (code / "versioned.py").write_text("def answer(item):\n    return ('v1', item)\n")
    old = stages("versioned:answer", python_path=(code,))
    assert getattr(old.process("r", [1, 2]), "plain_outputs", None) == [("v1", 1), ("v1", 2)]  # bulk path
    (code / "versioned.py").write_text("def answer(item):\n    return ('v2', item)\n")
    new = stages("versioned:answer", python_path=(code,))
    shutil.rmtree(code)  # the actors need nothing from the daemon's disk any more
    assert outputs(new.process("r", [1])) == [[("v2", 1)]]
    assert outputs(old.process("r", [2])) == [[("v1", 2)]]  # the old version's actors keep theirs


def test_actor_killed_mid_batch_fails_the_batch_and_is_replaced(universal: RayStage) -> None:
    results: list[ItemOutcome] = []
    items = [("sleep", 0.2), ("sleep", 0.2), ("sleep", 30.0)]
    caller = threading.Thread(target=lambda: results.extend(universal.process("run-1", items)))
    caller.start()
    wait_for(lambda: universal.stats()["in_flight_batches"] == 1, what="the batch in flight")
    replica = next(r for r in universal._replicas if r.in_flight)
    first_pid = replica.info["pid"]
    time.sleep(0.3)  # inside the batch
    assert replica.actor_id is not None
    universal.cluster.kill_actor(replica.actor_id)  # ray.kill in the driver
    caller.join(60)
    assert len(results) == 3
    assert all(o.error is not None and o.error.startswith("RayActorDied: ray actor died:") for o in results)
    wait_for(lambda: universal.stats()["replicas"] == {"alive": 2, "wanted": 2}, what="the replacement")
    assert replica.info["pid"] != first_pid
    assert outputs(universal.process("run-1", [("double", n) for n in range(10)])) == [[n * 2] for n in range(10)]


def test_setup_raising_fails_the_start_naming_the_stage(stages: Callable[..., RayStage]) -> None:
    with pytest.raises(StartError) as caught:
        stages("raystages:FailingSetup")
    message = str(caught.value)
    assert "raytest/work" in message and "setup() failed in a ray actor: RuntimeError: no model file" in message
