"""The pure parts: exit descriptions, reply encoding with unpicklable results, compact replies, logs."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest

from pipelined.workers import ItemOutcome, protocol
from pipelined.workers.logbridge import LogBuffer, replay


@pytest.mark.parametrize(
    ("code", "text"),
    [(-9, "killed by SIGKILL"), (-11, "killed by SIGSEGV"), (3, "exited with code 3"),
     (0, "exited unexpectedly (code 0)"), (None, "stopped responding")],
)
def test_describe_exit(code: int | None, text: str) -> None:
    assert protocol.describe_exit(code) == text


def test_an_unpicklable_result_becomes_that_items_error() -> None:
    rows = [([1], [], False, None, None, 0.1), ([lambda: 0], [], False, None, None, 0.2)]
    kind, decoded, logs = pickle.loads(protocol.encode_rows(protocol.DONE, rows, [], "score"))  # type: ignore[arg-type]
    assert kind == protocol.DONE and decoded[0] == rows[0] and logs == []
    assert decoded[1][3].startswith("PicklingError: stage 'score': result of type function cannot be pickled")
    assert decoded[1][5] == 0.2


def test_compact_replies_expand_to_the_same_outcomes() -> None:
    error_row = ([], [], False, "ValueError: x", "tb", 0.3)
    compact = ("c", [5, None, None], [0.1, 0.2, 0.3], {2: error_row}, True)
    assert [plain(o) for o in protocol.outcomes(compact)] == [
        ([5], [], False, None, None, 0.1),
        ([], [], True, None, None, 0.2),
        ([], [], False, "ValueError: x", "tb", 0.3),
    ]
    assert [plain(ItemOutcome(*row)) for row in protocol.expand(compact)] == [plain(o) for o in protocol.outcomes(compact)]


def plain(outcome: ItemOutcome) -> tuple[Any, ...]:
    return (list(outcome.outputs), list(outcome.routed), *outcome[2:])


def test_log_records_keep_pipeline_stage_run_and_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    buffer = LogBuffer("orders", "score", logging.INFO)
    buffer.run = "r-7"
    logger = logging.getLogger("test.logbridge")
    logger.addHandler(buffer)
    try:
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed %s", "here")
    finally:
        logger.removeHandler(buffer)
    records = pickle.loads(pickle.dumps(buffer.take()))
    assert buffer.take() == []
    caplog.clear()
    replay(records)
    record = next(r for r in caplog.records if r.name == "test.logbridge" and r.getMessage() == "failed here")
    assert (record.pipeline, record.stage, record.run) == ("orders", "score", "r-7")  # type: ignore[attr-defined]
    assert "KeyError: 'k'" in (record.exc_text or "")


def test_batch_outcomes_offer_outputs_in_bulk_and_the_same_outcomes_one_by_one() -> None:
    from pipelined.workers.batch_outcomes import BatchOutcomes

    clean = BatchOutcomes([1, None, 3], [0.1, 0.2, 0.3], {}, True)
    assert clean.plain_outputs == [1, 3] and clean.filtered_count == 1 and len(clean) == 3
    assert [list(o.outputs) for o in clean] == [[1], [], [3]] and clean[1].filtered
    error_row = ([], [], False, "ValueError: x", "tb", 0.3)
    broken = BatchOutcomes([1, None, None], [0.1, 0.2, 0.3], {2: error_row}, True)
    assert broken.plain_outputs is None and broken.filtered_count == 1
    assert broken[2].error == "ValueError: x" and broken[-1] == ItemOutcome(*error_row)
    consumer = BatchOutcomes([None, None], [0.1, 0.1], {}, False)
    assert consumer.plain_outputs == [] and consumer.filtered_count == 0 and not consumer[0].filtered


def test_an_item_of_a_class_its_module_no_longer_names_reaches_a_worker_forked_before(tmp_path: Any) -> None:
    """A running version's dataclass, after a reload imported a new copy of its module: the
    standard pickler refuses it ("not the same object"); protocol.dumps sends it by name, and a
    worker forked with the old module finds the old class."""
    import importlib
    import os
    import sys

    (tmp_path / "twinmod.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass Point:\n    x: int\n\ndef norm(p):\n    return p.x\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        old = importlib.import_module("twinmod")
        item = [old.Point(3), old.norm]
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: forked with the old module
            os.close(write_fd)
            try:
                with os.fdopen(read_fd, "rb") as pipe:
                    point, norm = pickle.loads(pipe.read())
                os._exit(0 if type(point) is old.Point and norm is old.norm and norm(point) == 3 else 1)
            except BaseException:
                os._exit(2)
        os.close(read_fd)
        del sys.modules["twinmod"]  # a reload imports the module again
        new = importlib.import_module("twinmod")
        assert new.Point is not old.Point
        with pytest.raises(pickle.PicklingError):
            pickle.dumps(item, protocol=protocol.PROTOCOL)
        assert protocol.pickling_error(item) is None
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(protocol.dumps(item))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("twinmod", None)
