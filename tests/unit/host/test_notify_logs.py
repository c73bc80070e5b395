"""notify.Notifier against a notify socket the test binds; logs formats and journal fields."""

from __future__ import annotations

import io
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipelined import logcontext
from pipelined.host import logs
from pipelined.host.notify import Heartbeat, Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield path, sock
    finally:
        sock.close()


def test_silent_without_notify_socket() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval is None


def test_exact_messages(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready() and notifier.reloading() and notifier.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sock.recv(4096) == b"READY=1"
    reloading = sock.recv(4096).decode().split("\n")
    assert reloading[0] == "RELOADING=1"
    key, _, usec = reloading[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address() -> None:
    name = f"pipelined-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier(f"@{name}").status("1 pipelines running")
        assert sock.recv(4096) == b"STATUS=1 pipelines running"


def test_watchdog_only_while_healthy(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environment(env)
    assert notifier.watchdog_interval == 0.05
    healthy = [True]
    beat = Heartbeat(notifier, healthy=lambda: healthy[0], status=lambda: "2 pipelines running")
    beat.start()
    try:
        assert {sock.recv(4096) for _ in range(2)} == {b"WATCHDOG=1"}  # no STATUS= before READY=1
        beat.poke()  # what the daemon does after READY=1
        received = {sock.recv(4096) for _ in range(3)}
        assert b"WATCHDOG=1" in received and b"STATUS=2 pipelines running" in received
        healthy[0] = False
        sock.settimeout(0.3)  # drain what was in flight, then nothing more may arrive
        with pytest.raises(TimeoutError):
            while True:
                assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        beat.stop()


def test_watchdog_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(env).watchdog_interval is None


def _capture(fmt: str, monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logs.make_handler(fmt)
    logger = logging.getLogger(f"pipelined.test.{fmt}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return stream, logger


def test_text_lines_carry_pipeline_stage_run(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, logger = _capture("text", monkeypatch)
    logger.info("plain")
    logger.warning("retry %d", 2, extra={"pipeline": "orders", "stage": "enrich", "run": "r-000001"})
    with logcontext.log_context(pipeline="orders"):
        logcontext.ContextAdapter(logger, {"stage": "store"}).error("boom")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(" INFO pipelined.test.text plain")
    assert lines[1].endswith(" WARNING pipelined.test.text [orders/enrich run=r-000001] retry 2")
    assert lines[2].endswith(" ERROR pipelined.test.text [orders/store] boom")


def test_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, logger = _capture("json", monkeypatch)
    try:
        raise ValueError("bad item")
    except ValueError:
        logger.exception("failed", extra={"pipeline": "p", "stage": "s", "run": "r-1"})
    entry = orjson.loads(stream.getvalue().splitlines()[0])
    assert entry["message"] == "failed" and entry["level"] == "error"
    assert (entry["pipeline"], entry["stage"], entry["run"]) == ("p", "s", "r-1")
    assert "ValueError: bad item" in entry["exception"]


def test_journal_handler_gets_upper_case_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = logs.make_handler("journal")
    sent: list[dict[str, object]] = []
    monkeypatch.setattr(handler, "send", lambda MESSAGE, **fields: sent.append({"MESSAGE": MESSAGE, **fields}))
    record = logging.LogRecord("pipelined", logging.INFO, __file__, 1, "hello", None, None)
    record.pipeline, record.stage, record.run = "orders", "enrich", "r-000002"
    handler.handle(record)
    assert sent[0]["MESSAGE"] == "hello"
    assert (sent[0]["PIPELINE"], sent[0]["STAGE"], sent[0]["RUN"]) == ("orders", "enrich", "r-000002")


def test_auto_is_journal_only_when_journal_stream_is_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "stderr"
    with open(target, "w") as fh:
        monkeypatch.setattr(sys, "stderr", fh)
        st = os.fstat(fh.fileno())
        assert logs.resolve_format("auto", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) == "journal"
        assert logs.resolve_format("auto", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}) == "text"
        assert logs.resolve_format("auto", {}) == "text"
        assert logs.resolve_format("json", {}) == "json"
